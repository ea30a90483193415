// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Writes a fresh slot per round: called with far too little gas, the transaction is
/// included, runs out of gas and uses its whole gas limit.
contract GasBurner {
    uint256 public burned;
    mapping(uint256 => uint256) public sink;

    function burn(uint256 count) external {
        for (uint256 i = 0; i < count; ++i) {
            sink[i] = uint256(keccak256(abi.encode(i, block.number, msg.sender)));
        }
        burned += count;
    }
}
