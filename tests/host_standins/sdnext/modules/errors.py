"""``modules/errors.py`` of SD.Next, reduced: ``display(e, task)`` logs the exception and never raises."""

import sys
import traceback

exception_records = []


def display(e: Exception, task, suppress=None):
    exception_records.append((task, e))
    print(f"{task}: {type(e).__name__}: {e}", file=sys.stderr)
    print("".join(traceback.format_exception(type(e), e, e.__traceback__)), file=sys.stderr)
