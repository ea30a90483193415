// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title ClaimReceiver: an agent wallet for tests of AgentRewardPool payouts.
/// @notice Mode 0 accepts payments, mode 1 refuses them, mode 2 accepts them and first calls
///         `target` with `reentry` (once), recording whether that call succeeded and its revert
///         selector.
contract ClaimReceiver {
    uint8 public mode;
    address public target;
    bytes public reentry;
    bool public reentryAttempted;
    bool public reentrySucceeded;
    bytes4 public reentryError;
    uint256 public received;

    error Refused();

    /// @notice Configure how the next payment is handled.
    function configure(uint8 mode_, address target_, bytes calldata reentry_) external {
        mode = mode_;
        target = target_;
        reentry = reentry_;
        reentryAttempted = false;
    }

    /// @notice Call `target` as this wallet (e.g. pool.claim()), bubbling up a revert.
    function poke(bytes calldata data) external {
        (bool ok, bytes memory ret) = target.call(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 32), mload(ret))
            }
        }
    }

    receive() external payable {
        if (mode == 1) revert Refused();
        if (mode == 2 && !reentryAttempted) {
            reentryAttempted = true;
            (bool ok, bytes memory ret) = target.call(reentry);
            reentrySucceeded = ok;
            if (!ok && ret.length >= 4) reentryError = bytes4(ret);
        }
        received += msg.value;
    }
}
