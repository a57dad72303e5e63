"""Where the checks read from: a data directory (`activemirror sql --data-dir`) or, given a
URL, a running server (`activemirror sql --server`)."""


def where(data):
    """The `activemirror sql` arguments that read from `data`."""
    if data.startswith("http://") or data.startswith("https://"):
        return ["--server", data]
    return ["--data-dir", data]
