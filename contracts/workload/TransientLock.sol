// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title A reentrancy lock in transient storage (EIP-1153) guarding ordinary storage writes.
/// @notice bump() takes the lock with TSTORE, stashes its argument in a second transient slot,
/// tries to re-enter itself (refused by the lock, read back with TLOAD in the inner frame),
/// then copies the stash into storage. Transient slots are empty again in the next transaction.
contract TransientLock {
    // keccak256("ioswarm.workload.lock") and keccak256("ioswarm.workload.scratch"): keys away
    // from the low slots a compiler would pick.
    uint256 private constant LOCK_SLOT =
        0xf5e1a8d79a9f78b7ee7fefbb1eec2847a473bde90375696419a21aaf0fb76ab7;
    uint256 private constant SCRATCH_SLOT =
        0xbc1a41f8325a3f4f88eace3e956a286380576b3bc5f66660776543097d007e26;

    uint256 public total;
    address public lastCaller;
    uint256 public blockedReentries;
    uint256 public lastScratch;

    error Reentered();

    modifier nonReentrant() {
        bool locked;
        assembly {
            locked := tload(LOCK_SLOT)
        }
        if (locked) revert Reentered();
        assembly {
            tstore(LOCK_SLOT, 1)
        }
        _;
        assembly {
            tstore(LOCK_SLOT, 0)
        }
    }

    function bump(uint256 amount) external nonReentrant {
        assembly {
            tstore(SCRATCH_SLOT, amount)
        }
        total += amount;
        lastCaller = msg.sender;
        try this.bump(amount) {
            revert("TransientLock: reentry was not refused");
        } catch (bytes memory reason) {
            if (reason.length != 4 || bytes4(reason) != Reentered.selector) {
                revert("TransientLock: unexpected failure on reentry");
            }
            ++blockedReentries;
        }
        uint256 scratch;
        assembly {
            scratch := tload(SCRATCH_SLOT)
        }
        lastScratch = scratch;
    }
}
