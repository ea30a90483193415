// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Many storage slots per call.
/// @notice One churn writes a run of mapping cells (fresh and already set), clears one, rewrites
/// a packed struct and pushes to and pops from two dynamic arrays: the state diff of a single
/// transaction spans dozens of slots.
contract StorageHeavy {
    struct Entry {
        address author; // packed with round and touched in one slot
        uint64 round;
        bool touched;
        uint32 writes; // starts the second slot
        bytes32 digest;
        uint256 total;
    }

    uint256 public rounds;
    uint256[] public history;
    mapping(uint256 => uint256) public cells;
    mapping(address => Entry) public entries;
    mapping(address => uint256[]) public trails;

    event Churned(address indexed author, uint256 indexed round, uint256 base, uint256 writes);

    /// @notice Sets `count` cells and history items, so later churns also overwrite set slots.
    function seed(uint256 count) external {
        uint256 start = history.length;
        for (uint256 i = 0; i < count; ++i) {
            cells[start + i] = start + i + 1;
            history.push(start + i + 1);
        }
    }

    /// @notice Writes cells `base` .. `base + writes - 1`, clears cell `base + writes`, rewrites
    /// the caller's entry and grows both arrays by one (two pushes and a pop each).
    function churn(uint256 base, uint256 writes) external {
        uint256 round = ++rounds;
        bytes32 digest = keccak256(abi.encode(msg.sender, round, base));
        uint256 total;
        for (uint256 i = 0; i < writes; ++i) {
            uint256 value = uint256(keccak256(abi.encode(digest, i)));
            cells[base + i] = value;
            total += value >> 200;
        }
        delete cells[base + writes];

        Entry storage entry = entries[msg.sender];
        entry.author = msg.sender;
        entry.round = uint64(round);
        entry.touched = !entry.touched;
        entry.writes = uint32(writes);
        entry.digest = digest;
        entry.total += total;

        history.push(round);
        history.push(total);
        history.pop();

        uint256[] storage trail = trails[msg.sender];
        trail.push(total);
        trail.push(round);
        trail.pop();

        emit Churned(msg.sender, round, base, writes);
    }

    function historyLength() external view returns (uint256) {
        return history.length;
    }

    function trailLength(address author) external view returns (uint256) {
        return trails[author].length;
    }
}
