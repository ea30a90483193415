// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title What the factory creates: a small contract with a constructor that writes storage.
contract Child {
    address public immutable factory;
    uint256 public value;

    constructor(uint256 value_) {
        factory = msg.sender;
        value = value_;
    }
}

/// @title Creates children with CREATE (address from the factory's nonce) and CREATE2
/// (address from a caller-chosen salt, predictable before the transaction is sent).
contract Factory {
    uint256 public created;
    address public lastChild;

    event Created(address indexed child, bool indexed viaCreate2, bytes32 salt);

    function create(uint256 value) external returns (address child) {
        child = address(new Child(value));
        _record(child, false, bytes32(0));
    }

    function create2(bytes32 salt, uint256 value) external returns (address child) {
        child = address(new Child{salt: salt}(value));
        _record(child, true, salt);
    }

    /// @notice The address `create2(salt, value)` creates (EIP-1014).
    function predict(bytes32 salt, uint256 value) external view returns (address) {
        bytes32 initHash = keccak256(abi.encodePacked(type(Child).creationCode, abi.encode(value)));
        bytes32 digest = keccak256(abi.encodePacked(bytes1(0xff), address(this), salt, initHash));
        return address(uint160(uint256(digest)));
    }

    function _record(address child, bool viaCreate2, bytes32 salt) private {
        ++created;
        lastChild = child;
        emit Created(child, viaCreate2, salt);
    }
}
