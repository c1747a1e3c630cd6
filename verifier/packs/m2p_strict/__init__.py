"""The m2p-strict pack: L4 RO_MPT slots after a restore that pins before vCPU 0's context.

Declaration in :mod:`.declaration`, specification in :mod:`.model`, scenarios in
:mod:`.scenarios`, P1-P9 in :mod:`.checks`.
"""

from __future__ import annotations

from verifier.packs import Pack

from .checks import mutation_proof, run_on_checkout, run_pack, write_harness_for
from .declaration import CHECKS, FUNCTIONS, KEYWORDS, NAME, ROLES, TITLE

PACK = Pack(
    name=NAME,
    title=TITLE,
    roles=ROLES,
    functions=FUNCTIONS,
    keywords=KEYWORDS,
    checks=CHECKS,
    run=run_pack,
    mutation_proof=mutation_proof,
    on_checkout=run_on_checkout,
    on_harness=write_harness_for,
    files=tuple(sorted({f for r in ROLES for f in r.files})),
)

__all__ = ["PACK", "mutation_proof", "run_pack"]
