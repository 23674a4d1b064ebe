"""The usage example of llama-agents-dbos's README, with its imports renamed to stepstream.

``python _peer_app.py DATABASE_URL``: prints the result. Only the imports (and the
database URL, SQLite here) differ from the peer's text.
"""

import asyncio
import sys

from dbos import DBOS
from dbos import DBOSConfig

from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step
from stepstream.durable import DBOSRuntime

# Configure DBOS
config: DBOSConfig = {
    "name": "my-app",
    "system_database_url": sys.argv[1],
}
DBOS(config=config)

# Create runtime and workflow
runtime = DBOSRuntime()


class MyWorkflow(Workflow):
    @step
    async def my_step(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="done")


workflow = MyWorkflow(runtime=runtime)

# launch_sync() works outside async contexts; use await runtime.launch() inside one
runtime.launch_sync()


async def main() -> None:
    result = await workflow.run()
    print(result)  # noqa: T201 - the result is the output the test reads
    await runtime.destroy()


asyncio.run(main())
