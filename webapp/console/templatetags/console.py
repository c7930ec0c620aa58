from datetime import timedelta
from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def ago(delta: timedelta | None) -> str:
    """Compact duration: 45s, 12m, 3h, 2d (negative -> '-' prefix)."""
    if delta is None:
        return ""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{sign}{seconds // size}{unit}"
    return f"{sign}{seconds}s"


@register.filter
def get(mapping, key):
    try:
        return mapping.get(key, "")
    except AttributeError:
        return ""


@register.filter
def si(value) -> str:
    """1234567 -> 1.23M (FLOPs, parameters)."""
    if value is None:
        return "–"
    value = float(value)
    for unit, size in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f}{unit}"
    return f"{value:.0f}" if value == int(value) else f"{value:.3g}"


@register.filter
def admin_role(user) -> bool:
    # Cached on the user object: the nav asks several times per page.
    if not hasattr(user, "_console_is_admin"):
        from support_agents.permissions import is_admin

        user._console_is_admin = is_admin(user)
    return user._console_is_admin


_JSON_ESCAPES = {ord(">"): "\\u003E", ord("<"): "\\u003C", ord("&"): "\\u0026"}


@register.simple_tag
def plot(figure: dict | None, element_id: str, css_class: str = "console-plot"):
    """A Plotly figure: an empty div plus its JSON in a non-executable script tag, drawn by console.js
    (also after htmx swaps). The JSON is escaped so no string in it can close the script tag."""
    import json

    from django.utils.html import format_html
    from django.utils.safestring import mark_safe

    if not figure:
        return ""
    payload = json.dumps(figure, separators=(",", ":"), default=str).translate(_JSON_ESCAPES)
    return format_html('<div id="{}" class="{}"></div><script type="application/json" data-plot="{}">{}</script>',
                       element_id, css_class, element_id, mark_safe(payload))


@register.filter
def pct(value) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


@register.filter
def secs(value) -> str:
    return "–" if value is None else (f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s")


@register.filter
def money(value) -> str:
    """Amounts of money: cents from 1 up, else three significant digits without an exponent, since a
    single model call often costs millionths (0.0000118, not 0.000012 or 1.18e-05)."""
    if value is None:
        return "–"
    amount = Decimal(str(value))
    if amount == 0:
        return "0"
    if abs(amount) >= 1:
        return f"{amount:,.2f}"
    return format(Decimal(f"{amount:.3g}").normalize(), "f")
