"""Makes two writers collide for sure: each reads the registry document, then waits at a
barrier until every writer has read the same generation, so all but one write must conflict."""

import time
from pathlib import Path


class FirstReadBarrier:
    """A registry document store whose first `read` returns only when `parties` processes
    have done theirs (files `<directory>/ready-<who>`)."""

    def __init__(self, documents, directory, who: str, parties: int = 2, timeout: float = 300):
        self.documents = documents
        self.dir = Path(directory)
        self.who = who
        self.parties = parties
        self.timeout = timeout
        self.waited = False

    def read(self):
        result = self.documents.read()
        if not self.waited:
            self.waited = True
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / f"ready-{self.who}").touch()
            deadline = time.monotonic() + self.timeout
            while len(list(self.dir.glob("ready-*"))) < self.parties:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.who}: the other writer never read the registry")
                time.sleep(0.005)
        return result

    def write(self, doc, token):
        self.documents.write(doc, token)
