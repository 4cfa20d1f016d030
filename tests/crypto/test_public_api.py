import crypto


def test_all_names_exist_and_are_sorted_like_the_module_says() -> None:
    for name in crypto.__all__:
        assert hasattr(crypto, name), name
    assert len(set(crypto.__all__)) == len(crypto.__all__)


def test_no_tenseal_type_leaks_through_the_public_surface() -> None:
    for name in crypto.__all__:
        obj = getattr(crypto, name)
        module = getattr(obj, "__module__", "") or ""
        assert "tenseal" not in module, name
        assert "sealapi" not in module, name
