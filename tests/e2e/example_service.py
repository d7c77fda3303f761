"""The example AI service of the end-to-end tests: `example.Calculator` of calculator.proto.

Usage: python example_service.py PORT

Compiles calculator.proto (next to this file) into a temporary directory with grpc_tools.protoc,
serves it on 127.0.0.1:PORT with plain grpcio, prints `LISTENING <port>` once it accepts calls,
and then one JSON line per call (flushed):

    {"method": "/example.Calculator/add", "snet-user-address": "0x…" or null,
     "metadata": {key: value, …}, "request": {"a": 2, "b": 3}}

`snet-user-address` is what the ledger adds for the paid call's sender; the service never checks
payments itself. Stops on SIGTERM/SIGINT.
"""

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from concurrent import futures

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = "calculator.proto"


def compile_proto(out_dir):
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    status = protoc.main([
        "protoc",
        "-I" + HERE,
        "-I" + include,
        "--python_out=" + out_dir,
        "--grpc_python_out=" + out_dir,
        os.path.join(HERE, PROTO),
    ])
    if status != 0:
        raise SystemExit("protoc failed on %s (status %d)" % (PROTO, status))
    sys.path.insert(0, out_dir)


def record(method, context, request):
    metadata = {}
    for key, value in context.invocation_metadata():
        metadata[key] = value.hex() if isinstance(value, bytes) else value
    line = {
        "method": method,
        "snet-user-address": metadata.get("snet-user-address"),
        "metadata": metadata,
        "request": {"a": request.a, "b": request.b},
    }
    print(json.dumps(line, sort_keys=True), flush=True)


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: example_service.py PORT")
    port = int(sys.argv[1])
    out_dir = tempfile.mkdtemp(prefix="calculator-pb-")
    compile_proto(out_dir)
    import calculator_pb2
    import calculator_pb2_grpc

    # Loaded; the generated files are not needed any more (the process is usually killed).
    shutil.rmtree(out_dir, ignore_errors=True)

    class Calculator(calculator_pb2_grpc.CalculatorServicer):
        def add(self, request, context):
            record("/example.Calculator/add", context, request)
            return calculator_pb2.Result(value=request.a + request.b)

        def add_stream(self, request, context):
            record("/example.Calculator/add_stream", context, request)
            for value in (request.a, request.b, request.a + request.b):
                yield calculator_pb2.Result(value=value)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    calculator_pb2_grpc.add_CalculatorServicer_to_server(Calculator(), server)
    bound = server.add_insecure_port("127.0.0.1:%d" % port)
    if bound != port:
        raise SystemExit("cannot listen on 127.0.0.1:%d" % port)
    server.start()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print("LISTENING %d" % port, flush=True)
    stop.wait()
    server.stop(grace=1).wait()


if __name__ == "__main__":
    main()
