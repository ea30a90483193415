// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Calls the precompiles at 0x01 (ecrecover), 0x02 (sha256), 0x04 (identity) and
/// 0x05 (modexp) and stores each result, so a wrong precompile shows up in the state diff.
contract PrecompileCaller {
    address public lastSigner;
    bytes32 public lastSha256;
    uint256 public lastModexp;
    bytes32 public lastIdentity;
    uint256 public calls;

    error PrecompileFailed(address precompile);

    function recover(bytes32 digest, uint8 v, bytes32 r, bytes32 s)
        external
        returns (address signer)
    {
        signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert PrecompileFailed(address(0x01));
        lastSigner = signer;
        ++calls;
    }

    function hashSha256(bytes calldata data) external returns (bytes32 digest) {
        digest = sha256(data);
        lastSha256 = digest;
        ++calls;
    }

    /// @notice `base ** exponent % modulus` through the modexp precompile (EIP-198).
    function modexp(uint256 base, uint256 exponent, uint256 modulus)
        external
        returns (uint256 result)
    {
        bytes memory input = abi.encode(uint256(32), uint256(32), uint256(32), base, exponent, modulus);
        (bool ok, bytes memory out) = address(0x05).staticcall(input);
        if (!ok || out.length != 32) revert PrecompileFailed(address(0x05));
        result = abi.decode(out, (uint256));
        lastModexp = result;
        ++calls;
    }

    /// @notice Copies `data` through the identity precompile and stores the copy's keccak256.
    function identity(bytes calldata data) external returns (bytes32 digest) {
        (bool ok, bytes memory out) = address(0x04).staticcall(data);
        if (!ok || keccak256(out) != keccak256(data)) revert PrecompileFailed(address(0x04));
        digest = keccak256(out);
        lastIdentity = digest;
        ++calls;
    }
}
