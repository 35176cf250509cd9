"""Dispatch: alarms and requests become work orders for the right person, on SLA clocks."""
