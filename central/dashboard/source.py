"""The dashboard's one door to central: AdminService read calls made with the operator's credential.

Every call is a read (List*, Get*), so a viewer's credential serves the whole dashboard. A call that fails
does not fail the page: :meth:`FleetSource.fetch` answers a :class:`Missing` in its place, which the page shows
("not available" for an RPC this central does not implement yet, the error's sentence otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from central.client import RPC_TIMEOUT_S, explain
from central.credential import Credential
from edgefleet.channels import mtls_channel
from edgefleet.v1 import admin_pb2, admin_pb2_grpc

log = logging.getLogger(__name__)

# The read RPCs the dashboard makes; nothing else is ever called (a test checks the templates' needs stay here).
READ_METHODS = frozenset(
    {
        "ListNodes",
        "GetNode",
        "ListRollouts",
        "ListFederatedRuns",
        "ListRoutingTotals",
        "GetMetricsHistory",
        "ListObjectives",
        "ListBurstUsage",
        "ListAuditEntries",
        "ListModels",
    }
)
# ListNodes and ListRoutingTotals pages: the largest central allows.
NODES_PAGE = 1000
ROUTING_PAGE = 200
# More pages than this is more than a dashboard should walk per request (1,000,000 nodes).
MAX_PAGES = 1000


@dataclass(frozen=True)
class Missing:
    """A part of a page central did not give: `unimplemented` when this central lacks the RPC."""

    reason: str
    unimplemented: bool = False


class FleetSource:
    """Calls AdminService's read RPCs over one mTLS channel (thread-safe: the web server's threads share it)."""

    def __init__(self, credential: Credential, address: str | None = None, timeout_s: float = RPC_TIMEOUT_S):
        self.address = address or credential.central
        self.timeout_s = timeout_s
        self._channel = mtls_channel(self.address, credential.ca_pem, credential.certificate_pem, credential.key_pem)
        self._stub = admin_pb2_grpc.AdminServiceStub(self._channel)

    def fetch(self, method: str, request: Any) -> Any:
        """The response, or a Missing that says why there is none."""
        if method not in READ_METHODS:
            raise ValueError(f"the dashboard only reads; {method} is not one of its calls")
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return Missing(f"not available: central at {self.address} does not implement {method} yet", True)
            reason = str(explain(exc, self.address))
            log.warning("%s failed: %s", method, reason)
            return Missing(reason)

    def all_nodes(self, selector: dict[str, str] | None = None) -> list[Any] | Missing:
        """Every node (ListNodes walked page by page)."""
        found: list[Any] = []
        for page in self._pages(
            lambda token: admin_pb2.ListNodesRequest(selector=selector or {}, page_size=NODES_PAGE, page_token=token),
            "ListNodes",
        ):
            if isinstance(page, Missing):
                return page
            found.extend(page.nodes)
        return found

    def nodes_page(self, page_size: int, page_token: str) -> Any:
        return self.fetch("ListNodes", admin_pb2.ListNodesRequest(page_size=page_size, page_token=page_token))

    def all_routing(self) -> list[Any] | Missing:
        """Every node's routing totals (ListRoutingTotals walked page by page)."""
        found: list[Any] = []
        for page in self._pages(
            lambda token: admin_pb2.ListRoutingTotalsRequest(page_size=ROUTING_PAGE, page_token=token),
            "ListRoutingTotals",
        ):
            if isinstance(page, Missing):
                return page
            found.extend(page.nodes)
        return found

    def _pages(self, request: Callable[[str], Any], method: str) -> Iterator[Any]:
        token = ""
        for _ in range(MAX_PAGES):
            page = self.fetch(method, request(token))
            yield page
            if isinstance(page, Missing) or not page.next_page_token:
                return
            token = page.next_page_token

    def close(self) -> None:
        self._channel.close()
