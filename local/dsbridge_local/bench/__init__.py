"""`dsbridge bench`: measure dsbridge's overhead next to the usual wiring, on the local stack.

Part of the local kit, not the runtime: nothing in the DAGs, operators or plugin imports it.
"""
