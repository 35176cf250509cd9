"""Grafana dashboards as code, the daily report and the terminal view for the E-control centre.

Every panel's SQL lives in `dashboards.queries`; `dashboards.macros` expands Grafana's macros so
tests, `hub top` and `hub report daily` run the same statements Grafana runs.
"""
