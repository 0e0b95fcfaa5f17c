"""Generated gRPC stubs for the edgefleet.v1 wire API (`make proto`); do not edit by hand."""
