import pytest

from privsplit.errors import ConfigError
from privsplit.registry import Registry


def test_register_create_names():
    reg = Registry("widget")

    @reg.register("b")
    def make_b(x=1):
        return ("b", x)

    reg.register("a")(lambda: "a")
    assert reg.names() == ["a", "b"]
    assert reg.create("b", x=3) == ("b", 3)
    assert "a" in reg and "c" not in reg


def test_unknown_name_lists_valid_choices():
    reg = Registry("widget")
    reg.register("alpha")(lambda: 1)
    with pytest.raises(ConfigError, match="unknown widget 'beta'; valid choices: alpha"):
        reg.create("beta")


def test_duplicate_registration_refused():
    reg = Registry("widget")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="twice"):
        reg.register("a")(lambda: 2)


def test_a_registered_class_takes_its_name_from_the_decorator():
    reg = Registry("widget")

    @reg.register("gear")
    class Gear:
        pass

    assert Gear.name == "gear" and reg.create("gear").name == "gear"
    with pytest.raises(ValueError, match="registered as 'cog' but names itself 'sprocket'"):
        @reg.register("cog")
        class Sprocket:
            name = "sprocket"


def _registries():
    from privsplit.attacks import ATTACKS
    from privsplit.methods import METHODS
    from privsplit.reduction.base import OPS

    return {"op": OPS, "method": METHODS, "attack": ATTACKS}


@pytest.mark.parametrize("kind", ["op", "method", "attack"])
def test_every_registered_class_is_named_as_registered(kind):
    reg = _registries()[kind]
    assert reg.names()
    for name in reg.names():
        assert reg.get(name).name == name, (kind, name)
