"""The smallest race: two threads increment a counter without atomicity.

    mmrace explore examples/lost_update.py:program
"""

from mmrace.engine import Var, require, spawn


def program():
    counter = Var(0, name="counter")

    def increment():
        value = counter.load()
        counter.store(value + 1)

    spawn(increment, name="A")
    spawn(increment, name="B")
    return lambda: require(counter.value == 2, f"counter is {counter.value}, expected 2")


def fixed():
    counter = Var(0, name="counter")

    def increment():
        counter.rmw(lambda v: v + 1)

    spawn(increment, name="A")
    spawn(increment, name="B")
    return lambda: require(counter.value == 2, f"counter is {counter.value}, expected 2")
