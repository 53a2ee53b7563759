"""Durable entities.

The per-operation job metrics entity (DESIGN.md) is built with the scheduled sync and metrics work
(issue 7); until then this blueprint registers no entity, and ``function_app.py`` registers it so
that the layout, and the indexing test, already cover it.
"""
from __future__ import annotations

import azure.durable_functions as df

bp = df.Blueprint()
