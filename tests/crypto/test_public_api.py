import uuid

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


def test_envelope_headers_describe_the_bytes_the_writers_write() -> None:
    headers = crypto.ENVELOPE_HEADERS
    uid = uuid.uuid4()
    fingerprint = b"\x05" * 32
    update = crypto.EncryptedUpdate(fingerprint, 7, 3, uid, (crypto.CipherBlock(2, b"abc"),))
    model = crypto.EncryptedModel(fingerprint, 9, 3, (crypto.CipherBlock(0, b"z"),))

    data = crypto.update_to_bytes(update)
    model_data = crypto.model_to_bytes(model)

    block_at = headers.prefix.size + headers.update.size
    epoch_at = headers.prefix.size + headers.update.offset("key_epoch")
    assert headers.prefix.codec.unpack_from(data) == (
        headers.magic,
        crypto.FORMAT_VERSION,
        headers.kind_update,
        0,
        fingerprint,
    )
    assert headers.update.codec.unpack_from(data, headers.prefix.size) == (7, 3, uid.bytes, 1)
    assert headers.update.field_codec("key_epoch").unpack_from(data, epoch_at) == (3,)
    assert headers.block.codec.unpack_from(data, block_at) == (2, 3)
    assert data[block_at + headers.block.size :] == b"abc"
    assert model_data[headers.prefix.offset("kind")] == headers.kind_model
    assert headers.model.codec.unpack_from(model_data, headers.prefix.size) == (9, 3, 1)
