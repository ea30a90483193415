"""Pure logic: no asyncio, grpc, web3 or lmdb imports; every function is callable from a plain test."""
