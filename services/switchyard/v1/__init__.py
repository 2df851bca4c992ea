"""Generated protobuf and gRPC stubs. Do not edit; run proto/generate.py."""
