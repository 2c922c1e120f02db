"""The SBOM and the provenance's facts, made while the smoke test and the push run.

`nox -s publish` runs `invoke smoke --draft-attestations`: as the smoke test starts, one
background thread makes the SBOM of the image under test and gathers what its provenance
records (the files, dvc.lock's binding of the model archive, the base image, the tool
versions). Both are only drafts, held in this process: nothing is signed, attached or tagged
here. attest, after the push of that image succeeded, joins the draft (:meth:`Draft.result`,
the one join point), adds the pushed digest and the end time, then signs and attaches as it
always did; ``latest`` moves after that. So the order holds:

* the push starts only after the smoke test passed (the smoke step ends first, and a failing
  or interrupted smoke test stops the draft: :meth:`Draft.cancel`);
* attest uses a draft only for the image it signs: the pushed manifest's config must be the
  image ID the draft was made from (the image built and smoke-tested here); otherwise it
  makes the documents itself, as when the steps run one by one;
* a failure of the draft is raised at the join, in one line (:class:`DraftFailed`), before
  anything is signed.

Stopping: the draft checks a stop flag between its parts; a failing step, Ctrl-C or SIGTERM
sets it and waits for the thread (:meth:`Draft.cancel`, also at the process's exit), so its
own cleanup (the throwaway container, the scratch directory) runs before the process ends.
A part that is running finishes first: a few seconds at most, each command under the run's
deadline.
"""

from __future__ import annotations

import atexit
import datetime as dt
import threading
from typing import TYPE_CHECKING, Any

from cicd import attestations, sbom
from cicd.attestations import Drafted
from cicd.errors import DraftFailed

if TYPE_CHECKING:
    from cicd.context import Run
    from cicd.image import Target

# The digest is known only after the push: attest puts it in (:meth:`Drafted.facts_for`).
NOT_PUSHED_YET = "sha256:<not pushed yet>"


class _Stopped(Exception):
    """The draft was told to stop (the smoke test failed, Ctrl-C): not an error to report."""


class Draft:
    """The background thread that makes one image's SBOM and provenance facts."""

    def __init__(self, run: Run, goal: Target, image_id: str, started: dt.datetime) -> None:
        self.image_id = image_id
        self._stop = threading.Event()
        self._made: Drafted | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._work, args=(run, goal, started), name="attestation-draft", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def _work(self, run: Run, goal: Target, started: dt.datetime) -> None:
        reference = goal.references[0]  # the SBOM names the image by its SHA tag, as attest does
        try:
            self._check()
            bom = sbom.generate(run, reference)
            self._check()
            facts = attestations.gather(run, goal, NOT_PUSHED_YET, reference, started)
            if bom is not None and _described_image(bom) == self.image_id:
                self._made = Drafted(self.image_id, bom, facts)
            # else: the tag moved to another image meanwhile; attest makes them itself
        except _Stopped:
            pass
        except BaseException as error:  # reported at the join, in the main thread
            self._error = error

    def _check(self) -> None:
        if self._stop.is_set():
            raise _Stopped

    def result(self) -> Drafted | None:
        """The join: wait for the draft; its failure as :class:`DraftFailed` (one line)."""
        self._thread.join()
        if self._error is not None:
            first_line = (str(self._error).strip().splitlines() or [repr(self._error)])[0]
            raise DraftFailed(
                f"the SBOM and provenance made during the smoke test failed: {first_line}; "
                "run `invoke attest` to make them again (nothing was signed or attached)"
            ) from self._error
        return self._made

    def cancel(self) -> None:
        """Tell the draft to stop and wait for it: its part that is running ends first."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _described_image(bom: dict[str, Any]) -> str:
    """The image ID an SBOM describes (its container component's property), "" if none."""
    component = (bom.get("metadata") or {}).get("component") or {}
    for item in component.get("properties") or []:
        if item.get("name") == sbom.IMAGE_ID_PROPERTY:
            return str(item.get("value", ""))
    return ""


# The draft of this process, between the smoke step that starts it and attest that takes it.
_PENDING: list[Draft] = []


def start(run: Run, goal: Target, image_id: str, started: dt.datetime) -> Draft:
    """Start drafting the SBOM and provenance of the local image ``image_id`` (``goal``'s
    SHA tag); attest takes it with :func:`take`."""
    run.whales  # noqa: B018  made here, in the main thread, before the thread shares the run
    draft = Draft(run, goal, image_id, started)
    cancel_all()  # an earlier draft of this process is stale
    _PENDING.append(draft)
    draft.start()
    return draft


def take() -> Draft | None:
    """The draft this process started, if any; it is no longer pending."""
    return _PENDING.pop() if _PENDING else None


def cancel_all() -> None:
    """Stop every pending draft and wait for them (a failing step, the process's exit)."""
    while _PENDING:
        _PENDING.pop().cancel()


atexit.register(cancel_all)  # `invoke smoke --draft-attestations` alone, a failed push
