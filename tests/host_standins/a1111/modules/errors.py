"""modules/errors.py: report/display print a traceback and never raise."""

import sys
import traceback

exception_records = []


def record_exception():
    _, e, tb = sys.exc_info()
    if e is None:
        return
    exception_records.append((e, traceback.format_exc()))
    if len(exception_records) > 5:
        exception_records.pop(0)


def report(message: str, *, exc_info: bool = False) -> None:
    record_exception()
    for line in message.splitlines():
        print("***", line, file=sys.stderr)
    if exc_info:
        print(traceback.format_exc(), file=sys.stderr)
        print("---", file=sys.stderr)


def display(e: Exception, task, *, full_traceback=False):
    record_exception()
    print(f"{task or 'error'}: {type(e).__name__}", file=sys.stderr)
    print("".join(traceback.format_exception(type(e), e, e.__traceback__)), file=sys.stderr)


def run(code, task):
    try:
        code()
    except Exception as e:
        display(task, e)
