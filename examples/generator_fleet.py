"""The generator fleet app: the maintenance agent for every generator alert.

    aiotflow seed --model model.onnx          # roster, maintenance logs, incident history
    aiotflow run examples.generator_fleet:app # then approve with: aiotflow approve
"""

from aiotflow import App
from aiotflow.agents import register_maintenance_agent

app = App("generator-fleet")
register_maintenance_agent(app)
