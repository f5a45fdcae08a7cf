"""The gRPC responses unirt serve encodes by hand, checked against the real protobuf classes (tritonclient's
service_pb2): every kind of output the encoder writes parses back to the same message, and its bytes equal
protobuf's own (deterministic) serialization of that message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from unirt.serve.datatypes import encode_raw
from unirt.serve.grpc_servicer import _stream_answer, decode_request, encode_response
from unirt.serve.inference import InferResponse, OutputTensor


def _with_protobuf(response: InferResponse) -> pb.ModelInferResponse:
    """The message built field by field with the protobuf API (what the encoder replaces)."""
    msg = pb.ModelInferResponse(model_name=response.model_name, model_version=response.model_version, id=response.id)
    pending_empty = 0
    for out in response.outputs:
        tensor = msg.outputs.add(name=out.name, datatype=out.datatype, shape=list(out.shape))
        if out.shm is not None:
            tensor.parameters["shared_memory_region"].string_param = out.shm[0]
            tensor.parameters["shared_memory_byte_size"].int64_param = out.shm[1]
            pending_empty += 1
        else:
            msg.raw_output_contents.extend([b""] * pending_empty)
            pending_empty = 0
            msg.raw_output_contents.append(bytes(encode_raw(out.array, out.datatype)))
    return msg


def _out(name: str, array: np.ndarray, datatype: str) -> OutputTensor:
    return OutputTensor(name, datatype, array.shape, array, True)


def _shm(name: str, datatype: str, shape: tuple[int, ...], region: str, written: int) -> OutputTensor:
    return OutputTensor(name, datatype, shape, None, False, (region, written))


rng = np.random.default_rng(0)
CASES = {
    "one fp32 output": InferResponse("small", "1", "", [_out("y", rng.random((1, 2), dtype=np.float32), "FP32")]),
    "id, unicode names, empty version": InferResponse(
        "modèle", "", "req-ü-7", [_out("sortie", np.arange(6, dtype=np.int64).reshape(2, 3), "INT64")]
    ),
    "large dims and data (multi-byte lengths)": InferResponse(
        "det", "12", "x" * 300, [_out("y", rng.random((1, 25, 200, 20), dtype=np.float32), "FP32")]
    ),
    "scalar and empty outputs": InferResponse(
        "m", "1", "", [_out("s", np.array(3.5, np.float64), "FP64"), _out("e", np.zeros((0, 4), np.uint8), "UINT8")]
    ),
    "bytes output": InferResponse(
        "strings", "1", "a", [_out("y", np.array([b"ab", b"", "é".encode()], dtype=object), "BYTES")]
    ),
    "fp16 and bool": InferResponse(
        "m", "3", "", [_out("h", np.ones((2, 2), np.float16), "FP16"), _out("b", np.array([True, False]), "BOOL")]
    ),
    "shm output, then a data output (an empty raw entry keeps them aligned)": InferResponse(
        "m",
        "1",
        "i",
        [_shm("a", "FP32", (1, 4), "region-a", 16), _out("b", np.ones((1, 3), np.float32), "FP32")],
    ),
    "data output, then shm outputs (no trailing raw entries)": InferResponse(
        "m",
        "1",
        "",
        [
            _out("a", np.ones((1, 3), np.float32), "FP32"),
            _shm("b", "INT32", (1, 2), "r", 8),
            _shm("c", "FP32", (1, 2**20), "big", 2**22),
        ],
    ),
    "only shm outputs, zero bytes written, empty region name": InferResponse(
        "m", "1", "", [_shm("a", "FP32", (0, 3), "", 0), _shm("b", "FP32", (1,), "r", 4)]
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_encoded_response_is_the_protobuf_message(case):
    response = CASES[case]
    encoded = encode_response(response)
    expected = _with_protobuf(response)
    assert pb.ModelInferResponse.FromString(encoded) == expected
    assert encoded == expected.SerializeToString(deterministic=True)
    stream = pb.ModelStreamInferResponse.FromString(_stream_answer(encoded))
    assert stream.infer_response == expected and not stream.error_message


def test_encoded_outputs_decode_to_the_arrays():
    a, b = rng.random((2, 3), dtype=np.float32), np.array([b"x", b"yz"], dtype=object)
    msg = pb.ModelInferResponse.FromString(
        encode_response(InferResponse("m", "1", "", [_out("a", a, "FP32"), _out("b", b, "BYTES")]))
    )
    assert [list(o.shape) for o in msg.outputs] == [[2, 3], [2]]
    np.testing.assert_array_equal(np.frombuffer(msg.raw_output_contents[0], np.float32).reshape(2, 3), a)
    assert msg.raw_output_contents[1] == b"\x01\x00\x00\x00x\x02\x00\x00\x00yz"


def test_decoded_request_keeps_every_field():
    msg = pb.ModelInferRequest(model_name="m", model_version="2", id="r1")
    msg.parameters["timeout"].int64_param = 500
    msg.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    y = msg.inputs.add(name="y", datatype="INT32", shape=[1])
    y.parameters["shared_memory_region"].string_param = "in"
    y.parameters["shared_memory_byte_size"].int64_param = 4
    y.parameters["shared_memory_offset"].int64_param = 8
    msg.raw_input_contents.append(np.ones(2, np.float32).tobytes())
    out = msg.outputs.add(name="probs")
    out.parameters["classification"].int64_param = 3
    msg.outputs.add(name="z").parameters["shared_memory_region"].string_param = "out"
    msg.outputs[1].parameters["shared_memory_byte_size"].int64_param = 64
    request = decode_request(pb.ModelInferRequest.FromString(msg.SerializeToString()))
    assert (request.model_name, request.model_version, request.id) == ("m", "2", "r1")
    assert request.parameters == {"timeout": 500} and request.binary_output
    assert [(t.name, t.datatype, t.shape, t.shm) for t in request.inputs] == [
        ("x", "FP32", (1, 2), None),
        ("y", "INT32", (1,), ("in", 8, 4)),
    ]
    assert request.inputs[0].raw == np.ones(2, np.float32).tobytes() and request.inputs[1].raw is None
    assert [(o.name, o.binary, o.class_count, o.shm) for o in request.outputs] == [
        ("probs", True, 3, None),
        ("z", True, 0, ("out", 0, 64)),
    ]


def test_every_rpc_of_the_service_is_registered():
    from unirt.serve.context import ServerContext
    from unirt.serve.grpc_servicer import add_servicer
    from unirt.serve.manager import ModelManager
    from unirt.serve.repository import DirectoryRepository

    class Server:
        def __init__(self):
            self.generic = []

        def add_generic_rpc_handlers(self, handlers):
            self.generic.extend(handlers)

    server = Server()
    add_servicer(server, ServerContext(ModelManager(DirectoryRepository(Path(__file__).parent))))
    (handler,) = server.generic
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        details = type("Details", (), {"method": f"/{service.full_name}/{method.name}", "invocation_metadata": ()})
        found = handler.service(details)
        assert found is not None, method.name
        assert found.request_streaming == found.response_streaming == (method.name == "ModelStreamInfer")
        # the two inference RPCs answer bytes the servicer encoded; the others protobuf messages
        assert (found.response_serializer is None) == (method.name in ("ModelInfer", "ModelStreamInfer"))
