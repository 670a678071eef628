"""Coverage-guided fuzzing of the lexer and analyzer with atheris (libFuzzer).

    python tests/fuzz/fuzz_analyzer.py -runs=200000

Any input must give a result; the only exception allowed is the documented GcodeError.
"""

import sys

import atheris

with atheris.instrument_imports():
    from afn_agent.gcode._core import Core
    from afn_agent.gcode.analyzer import Analyzer
    from afn_agent.gcode.lexer import GcodeError


def one_input(data: bytes) -> None:
    analyzer = Analyzer(grbl=bool(data[:1]) and data[0] & 1 == 1)
    try:
        for line in data.decode("utf-8", "replace").splitlines():
            analyzer.feed_line(line + "\n")
        result = analyzer.result()
    except GcodeError:
        return
    assert result.estimated_s >= 0 and result.material_mm >= 0
    core = Core()  # the compiled path on raw bytes too (it reads str or bytes)
    for raw in data.split(b"\n"):
        core.line(raw)
    core.flush()
    assert core.moving_s >= 0


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
