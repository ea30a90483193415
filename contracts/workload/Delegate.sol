// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Code an EOA delegates to (EIP-7702): it runs in the EOA's own storage and balance.
contract Delegate {
    uint256 public count;
    uint256 public last;

    event Bumped(address indexed account, uint256 count, uint256 value);

    function bump(uint256 value) external payable {
        last = value;
        emit Bumped(address(this), ++count, value);
    }

    receive() external payable {}
}

/// @title A second delegation target, to re-delegate to: writes other slots than Delegate.
contract DelegateAlt {
    uint256 private _reserved0;
    uint256 private _reserved1;
    mapping(address => uint256) public calls;

    event Called(address indexed account, address indexed caller, uint256 value);

    function bump(uint256 value) external payable {
        calls[msg.sender] += value;
        emit Called(address(this), msg.sender, value);
    }

    receive() external payable {}
}
