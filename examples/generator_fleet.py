"""The generator fleet app: the maintenance agent for every generator alert.

    aiotflow seed --model model.onnx          # roster, maintenance logs, incident history
    aiotflow run examples.generator_fleet:app # then approve with: aiotflow approve
"""

from agents import register_maintenance_agent
from workflows import App

app = App("generator-fleet")
register_maintenance_agent(app)
