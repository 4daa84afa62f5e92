"""The server's Prometheus text page (/metrics) for the load tools: fetching it, its sample
lines and their labels. Metrics are extra: a server without them still gets measured."""
import re
from typing import Optional

# name, {labels} (optional), value
METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)\s*$')


def label(labels: str, key: str) -> Optional[str]:
    """The value of label `key` in a sample's "{...}" text, or None."""
    m = re.search(key + r'="([^"]*)"', labels)
    return m.group(1) if m else None


async def fetch(session, base_url: str) -> str:
    """GET base_url/metrics as text; "" when the server has none or cannot answer."""
    try:
        async with session.get(base_url + "/metrics") as resp:
            return await resp.text(errors="replace") if resp.status == 200 else ""
    except Exception:  # metrics are extra
        return ""
