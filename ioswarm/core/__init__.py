"""Pure logic: no asyncio, grpc, web3 or lmdb imports; every function runs in a plain test."""
