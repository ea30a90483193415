// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Reads what an account looks like from inside the EVM: EXTCODEHASH (0 for an absent or
/// EIP-161-empty account, keccak("") for an existing code-less one), EXTCODESIZE and BALANCE;
/// and pays value to an address (a fresh recipient springs into existence).
contract Probe {
    mapping(address => bytes32) public codeHashOf;
    mapping(address => uint256) public codeSizeOf;
    mapping(address => uint256) public balanceOf;
    uint256 public probes;

    event Probed(address indexed target, bytes32 codeHash, uint256 codeSize, uint256 balance);

    function probe(address target) external {
        bytes32 h;
        uint256 size;
        assembly {
            h := extcodehash(target)
            size := extcodesize(target)
        }
        uint256 bal = target.balance;
        codeHashOf[target] = h;
        codeSizeOf[target] = size;
        balanceOf[target] = bal;
        ++probes;
        emit Probed(target, h, size, bal);
    }

    function pay(address payable to) external payable {
        (bool ok, ) = to.call{value: msg.value}("");
        require(ok, "Probe: payment refused");
    }
}
