"""A workflow served by the hostile log tests: its name and its error carry forged lines.

Its ``workflow_name`` and the message of the error it raises hold a newline followed by a
forged JSON log line, an ANSI escape, a line separator and a lone surrogate (what
``os.fsdecode`` makes of a file name that is not UTF-8).
"""

from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step

FORGED = '\n{"level": "error", "event": "forged"}\r\x1b[31m\u2028'
NOT_UTF8 = b"caf\xe9.txt".decode("utf-8", "surrogateescape")  # 'caf\udce9.txt'


class HostileWorkflow(Workflow):
    """Fails at once with an OSError naming a file that is not UTF-8, and forged lines."""

    @step
    async def read(self, ev: StartEvent) -> StopEvent:
        msg = f"cannot read {NOT_UTF8}{FORGED}"
        raise OSError(msg)


hostile = HostileWorkflow(timeout=20, workflow_name=f"Hostile{FORGED}{NOT_UTF8}")
