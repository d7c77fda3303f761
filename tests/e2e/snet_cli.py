"""Drives the real snet-cli against the ledger, offline: no Registry contract, no IPFS.

Every snet command this script runs is printed first as `$ snet …`, followed by its stdout, its
stderr and its exit code, so that a test log shows exactly what a user would type and see.

    python snet_cli.py --home DIR setup --eth-rpc URL --mpe ADDR --client-key HEX --treasurer-key HEX \
        --org ORG --service SVC --group GROUP --group-id BASE64 --price COGS \
        --payment-address ADDR --endpoint URL [--token ADDR] [--registry ADDR] [--threshold N] \
        [--open-channel COGS [--expiration +Nblocks]]
    python snet_cli.py --home DIR client get-channel-state CHANNEL_ID ENDPOINT
    python snet_cli.py --home DIR client call ORG SVC GROUP add '{"a":2,"b":3}' -y --skip-update-check \
        [--endpoint URL] [--channel-id ID]
    python snet_cli.py --home DIR treasurer print-unclaimed --endpoint ENDPOINT
    python snet_cli.py --home DIR treasurer claim-all --endpoint ENDPOINT -y

`setup` runs once per scratch HOME (DIR). After it, the first word `client` or `treasurer` selects
the snet identity of that name (`snet identity NAME`, skipped when it is already the session's
identity) and the rest of the command line goes to
`snet` unchanged. The exit code is snet's (snet itself exits 42 on any error).

What `setup` does (see /work/shared/spec/clients.md, "Pointing the clients at a daemon"):
1. `snet network create local URL`: the session's network becomes `local`.
2. `snet identity create client key --private-key … --network local -de`, the same for `treasurer`
   (the provider: the channel's recipient and the group's payment address).
3. `snet identity client`, `snet set current_multipartyescrow_at MPE`, `snet set current_registry_at
   ADDR` (any address: snet only uses it to name its cache directory
   `~/.snet/mpe_client/<mpe>_<registry>/`), and `current_singularitynettoken_at` if `--token` is given.
4. The organisation, written to org.json (group name and id, payment address, threshold), then:
   * with `--open-channel COGS`: `snet channel open-from-metadata ORG GROUP AMOUNT EXPIRATION
     --metadata-file org.json --open-new-anyway -y` as the client. snet opens the channel on chain
     (AMOUNT in FET, 18 decimals) and writes its org cache `<cache>/ORG/organization_metadata.json`
     plus `org_info.pickle` = `{}` (no `orgMetadataURI`, so the Registry is never consulted). This
     script then prints `CHANNEL_ID=<id>`.
   * without it (the channel already exists): the same two files are written here, with snet's own
     OrganizationMetadata class. `open-from-metadata` cannot adopt an existing channel in snet-cli
     3.1.1: when it finds one it crashes (it passes the channel's dict where `channels(uint256)`
     wants the id), and `--open-new-anyway` would open a second channel.
   Requirement on the chain: snet-cli signs transactions with `net_version` as the chain id, so
   ganache must run with `--chain.networkId` equal to `--chain.chainId` (ganache's default network
   id is the start time, and every snet transaction then fails with "The transaction declared chain
   ID …").
5. The service, seeded by hand under `<cache>/ORG/SVC/`: `service_info.pickle` = `{}` (no
   `metadataURI`, so no Registry refresh), `service/service_metadata.json` (fixed price, endpoint,
   group id, MPE address), `service/service_spec/calculator.proto` and
   `service/calculator_pb2.py`, `service/calculator_pb2_grpc.py` compiled from it with
   grpc_tools.protoc.
"""

import argparse
import base64
import json
import os
import pickle
import shlex
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "calculator.proto")
DEFAULT_REGISTRY = "0x1111111111111111111111111111111111111111"


def snet_executable():
    candidate = os.path.join(os.path.dirname(sys.executable), "snet")
    return candidate if os.path.exists(candidate) else "snet"


def run_snet(home, args, check=True):
    """Runs `snet ARGS` with HOME=home; prints the command, its output and exit code."""
    env = dict(os.environ)
    env["HOME"] = home
    for key in list(env):
        if key.startswith("SNET_"):
            del env[key]
    print("$ snet " + " ".join(shlex.quote(a) for a in args), flush=True)
    done = subprocess.run([snet_executable()] + args, env=env, capture_output=True, text=True)
    if done.stdout:
        print(done.stdout.rstrip("\n"), flush=True)
    if done.stderr:
        print("[stderr]\n" + done.stderr.rstrip("\n"), flush=True)
    print("[exit %d]" % done.returncode, flush=True)
    if check and done.returncode != 0:
        sys.exit(done.returncode)
    return done


def cogs_to_fet(cogs):
    """snet's AMOUNT arguments are in FET with 18 decimals, whatever the token's decimals() says."""
    from snet.cli.utils.token2cogs import cogs2strtoken

    return cogs2strtoken(cogs)


def checksum(address):
    from web3 import Web3

    return Web3.to_checksum_address(address)


def compile_calculator(out_dir):
    from grpc_tools import protoc

    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    status = protoc.main([
        "protoc",
        "-I" + HERE,
        "-I" + include,
        "--python_out=" + out_dir,
        "--grpc_python_out=" + out_dir,
        PROTO,
    ])
    if status != 0:
        sys.exit("protoc failed on %s (status %d)" % (PROTO, status))


def org_metadata(a):
    return {
        "org_name": a.org,
        "org_id": a.org,
        "org_type": "individual",
        "description": {},
        "assets": {},
        "contacts": [],
        "groups": [{
            "group_name": a.group,
            "group_id": a.group_id,
            "payment": {
                "payment_address": checksum(a.payment_address),
                "payment_expiration_threshold": a.threshold,
                "payment_channel_storage_type": "etcd",
                "payment_channel_storage_client": {
                    "connection_timeout": "5s",
                    "request_timeout": "3s",
                    # Never contacted by the clients; must only look like a URL.
                    "endpoints": ["http://127.0.0.1:2379"],
                },
            },
        }],
    }


def service_metadata(a):
    return {
        "version": 1,
        "display_name": a.service,
        "encoding": "proto",
        "service_type": "grpc",
        "service_api_source": "",
        "mpe_address": checksum(a.mpe),
        "groups": [{
            "group_name": a.group,
            "group_id": a.group_id,
            "free_calls": 0,
            "pricing": [{"price_model": "fixed_price", "price_in_cogs": a.price, "default": True}],
            "endpoints": [a.endpoint],
            "daemon_addresses": [],
        }],
        "assets": {},
        "media": [],
        "tags": [],
    }


def setup(a):
    home = a.home
    if len(base64.b64decode(a.group_id)) != 32:
        sys.exit("--group-id must be the base64 of 32 bytes")
    os.makedirs(home, exist_ok=True)
    run_snet(home, ["network", "create", "local", a.eth_rpc])
    for name, key in (("client", a.client_key), ("treasurer", a.treasurer_key)):
        run_snet(home, ["identity", "create", name, "key", "--private-key", key, "--network", "local", "-de"])
    run_snet(home, ["identity", "client"])
    run_snet(home, ["set", "current_multipartyescrow_at", checksum(a.mpe)])
    run_snet(home, ["set", "current_registry_at", checksum(a.registry)])
    if a.token:
        run_snet(home, ["set", "current_singularitynettoken_at", checksum(a.token)])

    # The cache directory snet derives from the two addresses (lower case).
    cache = os.path.join(home, ".snet", "mpe_client", "%s_%s" % (a.mpe.lower(), a.registry.lower()))

    org_file = os.path.join(home, "org.json")
    with open(org_file, "w") as f:
        json.dump(org_metadata(a), f, indent=2)
    print("# wrote %s:\n%s" % (org_file, json.dumps(org_metadata(a), indent=2)), flush=True)
    if a.open_channel is not None:
        # The client opens its channel with snet itself; snet then writes the org cache.
        amount = cogs_to_fet(a.open_channel)
        done = run_snet(home, ["channel", "open-from-metadata", a.org, a.group, amount, a.expiration,
                               "--metadata-file", org_file, "--open-new-anyway", "-y"])
        lines = done.stdout.splitlines()
        if "#channel_id" not in lines or lines.index("#channel_id") + 1 >= len(lines):
            sys.exit("open-from-metadata printed no channel id")
        channel_id = int(lines[lines.index("#channel_id") + 1])
        print("CHANNEL_ID=%d" % channel_id, flush=True)
    else:
        # An existing channel: write the org cache exactly as open-from-metadata writes it
        # (`organization_metadata.json`, and `org_info.pickle` = {}). open-from-metadata itself cannot
        # be used here: in snet-cli 3.1.1 it crashes when it finds an existing channel (it passes the
        # channel's dict where `channels(uint256)` wants the id), after writing the org cache.
        from snet.cli.metadata.organization import OrganizationMetadata

        org_dir = os.path.join(cache, a.org)
        os.makedirs(org_dir, mode=0o700, exist_ok=True)
        OrganizationMetadata.from_json(org_metadata(a)).save_pretty(
            os.path.join(org_dir, "organization_metadata.json"))
        with open(os.path.join(org_dir, "org_info.pickle"), "wb") as f:
            pickle.dump({}, f)

    service_dir = os.path.join(cache, a.org, a.service)
    spec_dir = os.path.join(service_dir, "service")
    os.makedirs(os.path.join(spec_dir, "service_spec"), exist_ok=True)
    with open(os.path.join(service_dir, "service_info.pickle"), "wb") as f:
        pickle.dump({}, f)
    with open(os.path.join(spec_dir, "service_metadata.json"), "w") as f:
        json.dump(service_metadata(a), f, indent=4)
    shutil.copy(PROTO, os.path.join(spec_dir, "service_spec", "calculator.proto"))
    compile_calculator(spec_dir)
    print("# seeded %s:" % service_dir, flush=True)
    for root, _, files in sorted(os.walk(cache)):
        for name in sorted(files):
            print("#   " + os.path.relpath(os.path.join(root, name), home), flush=True)
    print("# service_metadata.json:\n" + json.dumps(service_metadata(a), indent=4), flush=True)


def session_identity(home):
    import configparser

    config = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    config.read(os.path.join(home, ".snet", "config"))
    return config.get("session", "identity", fallback=None)


def as_identity(a, identity):
    if session_identity(a.home) == identity:
        print("# snet's session identity is already %s" % identity, flush=True)
    else:
        run_snet(a.home, ["identity", identity])
    done = run_snet(a.home, [identity] + a.rest, check=False)
    sys.exit(done.returncode)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, help="scratch HOME for snet (~/.snet lives there)")
    commands = parser.add_subparsers(dest="command", required=True)

    s = commands.add_parser("setup")
    s.add_argument("--eth-rpc", required=True)
    s.add_argument("--mpe", required=True)
    s.add_argument("--token")
    s.add_argument("--registry", default=DEFAULT_REGISTRY)
    s.add_argument("--client-key", required=True)
    s.add_argument("--treasurer-key", required=True)
    s.add_argument("--org", required=True)
    s.add_argument("--service", required=True)
    s.add_argument("--group", required=True)
    s.add_argument("--group-id", required=True, help="base64 of the 32-byte group id")
    s.add_argument("--price", required=True, type=int, help="fixed price in cogs")
    s.add_argument("--payment-address", required=True)
    s.add_argument("--endpoint", required=True, help="the ledger, e.g. http://127.0.0.1:7000")
    s.add_argument("--threshold", type=int, default=0, help="payment_expiration_threshold in org metadata")
    s.add_argument("--open-channel", type=int, metavar="COGS",
                   help="open the client's channel with snet (open-from-metadata --open-new-anyway) with "
                        "this value; prints CHANNEL_ID=<id>. Without it the channel must exist already")
    s.add_argument("--expiration", default="+100000blocks", help="expiration of the channel snet opens")

    for identity in ("client", "treasurer"):
        c = commands.add_parser(identity, help="snet %s … as the %s identity" % (identity, identity))
        c.add_argument("rest", nargs=argparse.REMAINDER)

    a = parser.parse_args()
    a.home = os.path.abspath(a.home)
    if a.command == "setup":
        setup(a)
    else:
        as_identity(a, a.command)


if __name__ == "__main__":
    main()
