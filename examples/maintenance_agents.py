"""The three example maintenance agents, one app each (``aiotflow demo --scenario NAME``
runs each end to end on embedded defaults):

    aiotflow run examples.maintenance_agents:coolant    # dispatch on approval
    aiotflow run examples.maintenance_agents:line_stop  # derate, a manager approves a stop
    aiotflow run examples.maintenance_agents:bearing    # parts and planned downtime
"""

from aiotflow import App
from aiotflow.agents import (
    register_bearing_agent,
    register_line_stop_agent,
    register_maintenance_agent,
)
from aiotflow.workflows import AlertFilter

coolant = App("coolant")
register_maintenance_agent(coolant)

line_stop = App("line-stop")
register_line_stop_agent(line_stop, when=AlertFilter(asset_types=["generator"]))

bearing = App("bearing")
register_bearing_agent(bearing)
