"""Makes the real snet clients trust the end-to-end tests' CA; used by the TLS test only.

snet-cli 3.1.1 and snet-sdk 6.0.0 open an `https://` endpoint with
`grpc.ssl_channel_credentials(root_certificates=certificate)`, where `certificate` is a module
global of `snet.cli.utils.utils` and of `snet.sdk.service_client`, imported from the root
certificates bundled in each package (`snet.cli.resources.root_certificate`,
`snet.sdk.resources.root_certificate`). They ignore the system's trust store and have no option
for another CA, so a certificate made by the test CA would be refused. In production the ledger's
certificate must chain to one of those bundled roots (Let's Encrypt's does).

The TLS test copies this file as `sitecustomize.py` into a temporary directory that it puts on
PYTHONPATH of the client scripts, and names the CA's PEM file in MPE_LEDGER_TEST_CA_FILE. Python
imports `sitecustomize` when it starts, in the script and in every `snet` it runs (they inherit the
environment). This file then waits for the two modules above to be imported and replaces their
`certificate` with the test CA's PEM bytes, right after each module has run: nothing else of the
clients changes, and without MPE_LEDGER_TEST_CA_FILE this file does nothing.
"""

import importlib.abc
import os
import sys

PATCHED_MODULES = ("snet.cli.utils.utils", "snet.sdk.service_client")


class TrustTestCa(importlib.abc.MetaPathFinder):
    """Finds the patched modules with the other finders, then sets `certificate` once they ran."""

    def __init__(self, certificate):
        self.certificate = certificate

    def find_spec(self, name, path, target=None):
        if name not in PATCHED_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        run_module = spec.loader.exec_module
        certificate = self.certificate

        def run_and_trust_the_test_ca(module):
            run_module(module)
            module.certificate = certificate

        # Each module has a loader of its own (a SourceFileLoader for this file path).
        spec.loader.exec_module = run_and_trust_the_test_ca
        return spec


def install():
    ca_file = os.environ.get("MPE_LEDGER_TEST_CA_FILE")
    if not ca_file:
        return
    with open(ca_file, "rb") as pem:
        sys.meta_path.insert(0, TrustTestCa(pem.read()))


install()
