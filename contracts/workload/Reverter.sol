// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Reverts after writing storage: the write must not survive, the attempt is still
/// included and pays for its gas.
contract Reverter {
    uint256 public attempts;

    error Refused(address caller, uint256 attempt);

    /// @notice Reverts with Error(string).
    function failWithReason() external {
        ++attempts;
        require(false, "Reverter: refused on purpose");
    }

    /// @notice Reverts with the custom error Refused.
    function failWithCustomError() external {
        uint256 attempt = ++attempts;
        revert Refused(msg.sender, attempt);
    }
}
