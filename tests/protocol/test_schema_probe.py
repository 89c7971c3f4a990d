# Runs on MicroPython too: test_schema.py imports it through the `interp` fixture to read what
# only exists inside the interpreter under test (an exception's attributes). No tests here.


def error_field(fn, arg):
    """The `.field` and message of the SchemaError that fn(arg) raises; None if it raises none."""
    from protocol.schema import SchemaError

    try:
        fn(arg)
    except SchemaError as e:
        return (e.field, str(e), isinstance(e, ValueError))
    return None
