"""The SMSGateway24-compatible front at ``/getdata/<endpoint>`` (filled in by issue 9 item 4)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
