"""Running relay: the RQ worker process, its periodic duties, the sweep that repairs what
crashed processes left, and the supervisor behind ``relay run``."""
