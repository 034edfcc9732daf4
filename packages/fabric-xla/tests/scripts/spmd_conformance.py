"""The conformance kit for ``xla_spmd`` in a fresh process (run with PJRT_DEVICE=CPU CPU_NUM_DEVICES=2).

Prints the report as JSON on its last line; ``test_conformance.py`` reports each check.
"""

from __future__ import annotations

import json

from test_conformance import TestXLASPMDConformance, report_as_json

if __name__ == "__main__":
    report = TestXLASPMDConformance.conformance().run(raise_on_failure=False)
    print(json.dumps(report_as_json(report)))
