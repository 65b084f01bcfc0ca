"""The kernel model, one module per kernel source file.

The modules call each other the way the kernel's files do, so their imports
form cycles (fault handling and THP splitting call each other; rmap walks
call back into both). Each cycle is broken by a bottom-of-module import, which
works only when the cycle is entered from the right module. The package
entry is that seam: importing any `mmrace.mm.X` first runs this file, which
loads the model from `vma`, the module every cycle can be entered from, so
every module is complete before user code sees it, whatever a script imports
first (tests/test_imports.py imports each module first in a fresh process).
"""

from __future__ import annotations

from mmrace.mm import vma as _vma  # noqa: F401  (load order, see above)
