"""Method engines. Importing this package registers every recipe and protocol."""

import mltk.engines.condense  # noqa: F401
import mltk.engines.detox  # noqa: F401
import mltk.engines.mim  # noqa: F401
import mltk.engines.quantize  # noqa: F401
from mltk.engines import supervised  # noqa: F401
