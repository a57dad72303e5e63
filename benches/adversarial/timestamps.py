"""RFC 3339 text to Unix nanoseconds, written here without our code (any number of fraction
digits, `Z` or a `+hh:mm` / `-hh:mm` offset), so the checks do not trust our parser."""
import calendar, re

RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|([+-])(\d\d):(\d\d))$")


def unix_ns(s):
    m = RFC3339.match(s)
    y, mo, d, h, mi, se = map(int, m.groups()[:6])
    ns = calendar.timegm((y, mo, d, h, mi, se)) * 10**9 + int((m.group(7) or "").ljust(9, "0"))
    if m.group(8) != "Z":
        off = (int(m.group(10)) * 60 + int(m.group(11))) * 60 * 10**9
        ns -= off if m.group(9) == "+" else -off
    return ns


def event_ns(e):
    """The event's instant: `timestamp_ns`, else its `timestamp` (the generator writes both
    only when they agree; that is checked here too)."""
    if "timestamp" in e and "timestamp_ns" in e:
        assert unix_ns(e["timestamp"]) == e["timestamp_ns"], e
    return e["timestamp_ns"] if "timestamp_ns" in e else unix_ns(e["timestamp"])
