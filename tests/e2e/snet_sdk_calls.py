"""Paid calls through the real snet-sdk (6.0.0), with no Registry and no IPFS.

    python snet_sdk_calls.py --home DIR --eth-rpc URL --mpe ADDR --token ADDR --private-key HEX \
        --payment-address ADDR --group-id BASE64 --price COGS --endpoint URL [--endpoint URL2 …] \
        [--calls N] [--a 2 --b 3] [--threshold BLOCKS] [--stream] [--keep-going]

`SnetSDK.create_service_client` always reads the Registry and IPFS, so this script assembles what
it would have built, from the same SDK classes (see /work/shared/spec/clients.md, "snet-sdk"):

* `snet.sdk.config.configure(...)` before anything creates the web3 object (`get_we3_object` is
  lru_cached): private key, RPC endpoint, MPE address, token address (`Account` loads the
  FetchToken ABI at that address; chain 1337 has no entry in the packaged networks files).
* `MPEContract()`, `Account(mpe)`, `PaymentChannelProvider(mpe)`: shared by every client.
* A hand-built service metadata `Group` (fixed price, endpoint, group id, and the org group's
  `Payment` with the payment address and expiration threshold).
* One `ServiceClient` per `--endpoint`, with `options={"endpoint": URL, "concurrency": False}` and
  `PaidCallPaymentStrategy()`: plain MPE escrow calls, no free-call or prepaid token services.
  Calls go round-robin over the endpoints (call i uses endpoint i mod n).

For every call the strategy itself (unchanged; this script only prints what it returns) finds the
client's channels in the MPE's ChannelOpen logs (cached in ~/.snet/cache/mpe/<mpe>/channels.pickle,
hence the scratch HOME), asks the endpoint for the channel state (GetChannelState), opens a channel
of one call's price if the client has none, adds one price of funds on chain when the channel holds
less than the price, and signs (channel, nonce, last signed amount + price).

Output, one line each: `payment via <url>: channel=<id> nonce=<n> amount=<cumulative>`, then
`call <i> via <url>: value=<result>` or `call <i> via <url>: FAILED <grpc code> <details>`, and at the
end `successful_calls=<k>`, `failed_calls=<f>` and `channel <id>: <state the SDK read last>`.
The exit code is 0 only when every call succeeded.
"""

import argparse
import base64
import os
import sys
import traceback
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "calculator.proto")


def compile_calculator(out_dir):
    from grpc_tools import protoc

    os.makedirs(out_dir, exist_ok=True)
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    status = protoc.main([
        "protoc", "-I" + HERE, "-I" + include,
        "--python_out=" + out_dir, "--grpc_python_out=" + out_dir, PROTO,
    ])
    if status != 0:
        sys.exit("protoc failed on %s (status %d)" % (PROTO, status))
    sys.path.insert(0, out_dir)
    return Path(out_dir)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", required=True, help="scratch HOME (the SDK caches channels under ~/.snet/cache)")
    p.add_argument("--eth-rpc", required=True)
    p.add_argument("--mpe", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--private-key", required=True, help="the client's key (sender and signer)")
    p.add_argument("--payment-address", required=True)
    p.add_argument("--group-id", required=True, help="base64 of the 32-byte group id")
    p.add_argument("--group-name", default="default_group")
    p.add_argument("--org", default="testorg")
    p.add_argument("--service", default="calc")
    p.add_argument("--price", required=True, type=int, help="fixed price in cogs")
    p.add_argument("--threshold", type=int, default=0,
                   help="payment_expiration_threshold of the org group (the SDK extends channels expiring sooner)")
    p.add_argument("--endpoint", required=True, action="append", help="a ledger endpoint; repeat to alternate")
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--a", type=int, default=2)
    p.add_argument("--b", type=int, default=3)
    p.add_argument("--stream", action="store_true", help="finish with one paid server-streaming call (add_stream)")
    p.add_argument("--keep-going", action="store_true", help="go on after a failed call")
    return p.parse_args()


def main():
    args = parse_args()
    home = os.path.abspath(args.home)
    os.makedirs(home, exist_ok=True)
    # Before the SDK is imported: it resolves ~/.snet/cache at import time and reads SNET_* and a
    # .env file of the working directory into its settings.
    os.environ["HOME"] = home
    for key in list(os.environ):
        if key.startswith("SNET_"):
            del os.environ[key]
    os.chdir(home)

    from web3 import Web3
    from snet.sdk.config import configure

    configure(
        private_key=args.private_key,
        eth_rpc_endpoint=args.eth_rpc,
        mpe_contract_address=Web3.to_checksum_address(args.mpe),
        token_contract_address=Web3.to_checksum_address(args.token),
        concurrency=False,
        force_update=False,
    )

    import grpc
    from snet.sdk import PaidCallPaymentStrategy
    from snet.sdk.account import Account
    from snet.sdk.mpe.mpe_contract import MPEContract
    from snet.sdk.mpe.payment_channel_provider import PaymentChannelProvider
    from snet.sdk.registry.organization_metadata import Payment, PaymentChannelStorageClient
    from snet.sdk.registry.service_metadata import Group, Pricing
    from snet.sdk.service_client import ServiceClient
    from snet.sdk.types import ServiceStub
    from snet.sdk.utils.utils import get_we3_object

    pb_dir = compile_calculator(os.path.join(home, "calculator-pb"))
    import calculator_pb2
    import calculator_pb2_grpc

    payment_address = Web3.to_checksum_address(args.payment_address)
    if len(base64.b64decode(args.group_id)) != 32:
        sys.exit("--group-id must be the base64 of 32 bytes")

    w3 = get_we3_object()
    mpe = MPEContract()
    account = Account(mpe.contract.address)
    channels = PaymentChannelProvider(mpe)
    print("client %s, MPE %s, token %s, chain id %d" % (account.address, mpe.contract.address,
                                                       Web3.to_checksum_address(args.token), w3.eth.chain_id),
          flush=True)

    group = Group(
        group_name=args.group_name,
        free_calls=1,
        free_call_signer_address=payment_address,
        endpoints=list(args.endpoint),
        pricing=[Pricing(price_model="fixed_price", price_in_cogs=args.price)],
        payment=Payment(
            payment_address=payment_address,
            payment_expiration_threshold=args.threshold,
            payment_channel_storage_client=PaymentChannelStorageClient(endpoints=["http://127.0.0.1:2379"]),
        ),
    )
    # group_id is generated at random unless set (the model declares it init=False).
    group.group_id = args.group_id

    class ReportingPaidCall(PaidCallPaymentStrategy):
        """The SDK's PaidCallPaymentStrategy; only prints the payment it attaches."""

        def __init__(self, endpoint):
            super().__init__()
            self.endpoint = endpoint

        def get_payment_metadata(self, service_client):
            metadata = super().get_payment_metadata(service_client)
            values = dict(metadata)
            print("payment via %s: channel=%s nonce=%s amount=%s" % (
                self.endpoint, values["snet-payment-channel-id"], values["snet-payment-channel-nonce"],
                values["snet-payment-channel-amount"]), flush=True)
            return metadata

    clients = []
    for endpoint in args.endpoint:
        clients.append((endpoint, ServiceClient(
            args.org,
            args.service,
            group,
            [ServiceStub(calculator_pb2_grpc.CalculatorStub)],
            ReportingPaidCall(endpoint),
            {"endpoint": endpoint, "concurrency": False, "concurrent_calls": 1},
            mpe,
            account,
            w3,
            calculator_pb2,
            channels,
            pb_dir,
            False,
        )))

    succeeded = failed = 0
    for i in range(args.calls):
        endpoint, client = clients[i % len(clients)]
        try:
            result = client.call_rpc("add", "Numbers", a=args.a, b=args.b)
            print("call %d via %s: value=%d" % (i + 1, endpoint, result.value), flush=True)
            succeeded += 1
        except grpc.RpcError as error:
            print("call %d via %s: FAILED %s %s" % (i + 1, endpoint, error.code(), error.details()), flush=True)
            failed += 1
        except Exception:
            print("call %d via %s: FAILED in the client:" % (i + 1, endpoint), flush=True)
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()
            failed += 1
        if failed and not args.keep_going:
            break

    if args.stream and (not failed or args.keep_going):
        endpoint, client = clients[args.calls % len(clients)]
        try:
            values = [r.value for r in client.call_rpc("add_stream", "Numbers", a=args.a, b=args.b)]
            print("stream via %s: values=%s" % (endpoint, ",".join(str(v) for v in values)), flush=True)
            succeeded += 1
        except grpc.RpcError as error:
            print("stream via %s: FAILED %s %s" % (endpoint, error.code(), error.details()), flush=True)
            failed += 1

    print("successful_calls=%d" % succeeded, flush=True)
    print("failed_calls=%d" % failed, flush=True)
    endpoint, client = clients[0]
    for channel in client.payment_channels:
        try:
            channel.sync_state()
            print("channel %d: %s" % (channel.channel_id, channel.state), flush=True)
        except grpc.RpcError as error:
            print("channel %d: state unavailable: %s %s" % (channel.channel_id, error.code(), error.details()),
                  flush=True)
    sys.exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
