from .agents import *  # noqa: F403
from .audit import *  # noqa: F403
from .auth import *  # noqa: F403
from .bank import *  # noqa: F403
from .intake import *  # noqa: F403
from .runs import *  # noqa: F403
from .tickets import *  # noqa: F403
