// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title The callee: a ledger of amounts recorded per account.
contract Vault {
    uint256 public total;
    uint256 public updates;
    mapping(address => uint256) public deposits;

    event Recorded(address indexed caller, address indexed account, uint256 amount, uint256 total);

    function record(address account, uint256 amount) external returns (uint256) {
        deposits[account] += amount;
        uint256 newTotal = total + amount;
        total = newTotal;
        ++updates;
        emit Recorded(msg.sender, account, amount, newTotal);
        return newTotal;
    }
}

/// @title The caller: reads the vault's storage through view calls, then changes it.
/// @notice One forward is a STATICCALL, a CALL that writes the other contract's storage, a
/// second STATICCALL that must see that write, and writes of its own.
contract VaultClient {
    Vault public immutable vault;
    uint256 public observedTotal;
    uint256 public observedDeposit;
    uint256 public calls;

    error VaultMismatch(uint256 expected, uint256 actual);

    constructor(Vault vault_) {
        vault = vault_;
    }

    function forward(uint256 amount) external returns (uint256 newTotal) {
        uint256 before = vault.total();
        newTotal = vault.record(msg.sender, amount);
        if (newTotal != before + amount) revert VaultMismatch(before + amount, newTotal);
        observedTotal = newTotal;
        observedDeposit = vault.deposits(msg.sender);
        ++calls;
    }
}
