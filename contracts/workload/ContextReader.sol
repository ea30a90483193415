// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Stores one block or execution context value per function, each in its own slot, so
/// a test compares the slot with the including block's header.
contract ContextReader {
    uint256 public selfBalance; // SELFBALANCE
    bytes32 public parentHash; // BLOCKHASH(NUMBER - 1)
    uint256 public timestamp; // TIMESTAMP
    address public coinbase; // COINBASE
    uint256 public basefee; // BASEFEE
    uint256 public prevrandao; // PREVRANDAO
    uint256 public gaslimit; // GASLIMIT

    constructor() payable {}

    /// @notice Payable so the stored balance changes from call to call.
    function storeSelfBalance() external payable {
        selfBalance = address(this).balance;
    }

    function storeBlockhash() external {
        parentHash = blockhash(block.number - 1);
    }

    function storeTimestamp() external {
        timestamp = block.timestamp;
    }

    function storeCoinbase() external {
        coinbase = block.coinbase;
    }

    function storeBasefee() external {
        basefee = block.basefee;
    }

    function storePrevrandao() external {
        prevrandao = block.prevrandao;
    }

    function storeGaslimit() external {
        gaslimit = block.gaslimit;
    }
}
