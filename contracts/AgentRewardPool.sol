// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title AgentRewardPool: F1 cumulative reward-per-weight distribution for ioswarm agents.
/// @notice Each epoch the coordinator sends the agents' share of the epoch reward and the agents'
///         new weights in one call; agents (or anyone on their behalf) claim whenever they like.
///         ABI-compatible with the deployed v2 pool.
/// @dev Accounting is exact to the wei. Amounts are tracked in "scaled" units (wei * PRECISION):
///
///        PRECISION * balance == undistributed + sum over agents of accruedScaled(agent)
///
///      where accruedScaled(a) = pending(a) + weight(a) * (cumulative - snapshot(a)). A deposit
///      adds value * PRECISION to `undistributed`; a distribution moves floor(undistributed /
///      totalWeight) per unit of weight into `cumulative` and keeps the remainder (less than
///      totalWeight scaled units, i.e. under one wei while totalWeight <= 1e18) for the next
///      distribution. Deposits made while totalWeight is 0 stay in `undistributed` the same way.
///      Agents keep their sub-wei fraction in `pending`; a claim pays whole wei only. Nothing is
///      ever rounded away, so `deposited == claimed + balance` holds exactly.
///
///      Dust bound (wei): a distribution carries forward less than totalWeight / PRECISION and
///      each agent's unpaid fraction is below 1, so once N agents have claimed everything the
///      balance is below N + totalWeight / PRECISION. Against its exact rational share
///      sum_t(value_t * w_t / W_t) (value_t: wei entering distribution t, held deposits
///      included), an agent's credit (claimed + accruedScaled / PRECISION) is off by less than
///      sum_t(w_t * max(1, W_prev / W_t)) / PRECISION, W_prev being the total weight of the
///      distribution before t; what it has claimed trails its credit by less than 1.
///
///      Storage per agent: one slot packs weight (uint96, low bits) and the cumulative snapshot
///      (uint160, high bits); a second slot holds pending scaled rewards. That slot and the
///      `undistributed` slot keep their top bit set once written, so paying out or distributing
///      everything never returns them to zero (the next write would cost 20k gas instead of
///      2.9k). The global slot packs cumulative (uint160) and totalWeight (uint96). With
///      PRECISION = 1e18, `cumulative` reaches 2^160 after ~1.46e30 wei distributed per unit of
///      weight; a distribution that would pass it reverts (IOTX supply is ~1e28 wei).
contract AgentRewardPool {
    /// @notice Scale of `cumulativeRewardPerWeight` and of the scaled amounts.
    uint256 public constant PRECISION = 1e18;
    /// @notice Gas forwarded to each recipient by the batch payouts; a wallet that needs more
    ///         calls claim() itself. Bounds what one agent can make a settlement spend.
    uint256 public constant BATCH_CLAIM_GAS = 50_000;

    uint256 private constant _WEIGHT_BITS = 96;
    uint256 private constant _WEIGHT_MASK = (1 << 96) - 1;
    uint256 private constant _SLOT_SET = 1 << 255;
    uint256 private constant _VALUE_MASK = _SLOT_SET - 1;
    // A batch payout only starts with this much gas left, so a gas estimate can never be low
    // enough to starve a recipient of BATCH_CLAIM_GAS (which would fail it silently).
    uint256 private constant _BATCH_GAS_RESERVE = 60_000;

    /// @notice The only address allowed to deposit and set weights.
    address public coordinator;

    uint160 private _cumulative;
    uint96 private _totalWeight;
    uint256 private _undistributed;
    mapping(address => uint256) private _position;
    mapping(address => uint256) private _pending;

    bool private transient _locked;

    /// @notice A settlement: `amount` wei deposited for `agentCount` listed agents.
    event Settled(uint256 amount, uint256 agentCount);
    /// @notice An agent's weight changed to `weight`.
    event AgentUpdated(address indexed agent, uint256 weight);
    /// @notice `amount` wei were paid to `agent`.
    event Claimed(address indexed agent, uint256 amount);
    /// @notice A batch payout of `amount` wei to `agent` was refused; it stays claimable.
    event ClaimFailed(address indexed agent, uint256 amount);
    /// @notice Plain transfer of `amount` wei, distributed with the next settlement.
    event Deposited(address indexed from, uint256 amount);
    event CoordinatorChanged(address indexed previous, address indexed current);

    error NotCoordinator();
    error ZeroAddress();
    error LengthMismatch();
    error WeightTooLarge(address agent, uint256 weight);
    error TotalWeightTooLarge();
    error AccumulatorOverflow();
    error ScaledAmountOverflow();
    error NothingToClaim();
    error TransferFailed(address agent, uint256 amount);
    error InsufficientGas();
    error Reentrancy();

    modifier onlyCoordinator() {
        if (msg.sender != coordinator) revert NotCoordinator();
        _;
    }

    modifier nonReentrant() {
        if (_locked) revert Reentrancy();
        _locked = true;
        _;
        _locked = false;
    }

    constructor(address coordinator_) {
        if (coordinator_ == address(0)) revert ZeroAddress();
        coordinator = coordinator_;
        _undistributed = _SLOT_SET;
        emit CoordinatorChanged(address(0), coordinator_);
    }

    /// @notice Set the weights of `agentList`, then split msg.value (plus anything held) by the
    ///         resulting weights of all agents. Weight 0 removes an agent from future splits.
    function depositAndSettle(address[] calldata agentList, uint256[] calldata weights)
        external
        payable
        onlyCoordinator
        nonReentrant
    {
        _settle(agentList, weights);
    }

    /// @notice depositAndSettle, then pay every agent in `claimants` what it can claim. A refused
    ///         payout is skipped and stays claimable.
    function depositSettleAndClaim(
        address[] calldata agentList,
        uint256[] calldata weights,
        address[] calldata claimants
    ) external payable onlyCoordinator nonReentrant {
        _settle(agentList, weights);
        _batchClaim(claimants);
    }

    /// @notice Pay the caller everything it can claim, at any weight.
    function claim() external nonReentrant {
        _claimOne(msg.sender);
    }

    /// @notice Pay `agent` (not the caller) everything it can claim.
    function claimFor(address agent) external nonReentrant {
        _claimOne(agent);
    }

    /// @notice Pay each agent in `agentList`; agents with nothing to claim are skipped and a
    ///         refused payout stays claimable.
    function batchClaimFor(address[] calldata agentList) external nonReentrant {
        _batchClaim(agentList);
    }

    /// @notice Hand the coordinator role to `newCoordinator`.
    function setCoordinator(address newCoordinator) external onlyCoordinator nonReentrant {
        if (newCoordinator == address(0)) revert ZeroAddress();
        emit CoordinatorChanged(coordinator, newCoordinator);
        coordinator = newCoordinator;
    }

    /// @notice Plain transfers are rewards too: held and split with the next settlement.
    receive() external payable nonReentrant {
        // Checked: a carry into the top bit would overflow 2^256 and revert.
        _undistributed += msg.value * PRECISION;
        emit Deposited(msg.sender, msg.value);
    }

    /// @notice Whole wei `agent` can claim now.
    function claimable(address agent) external view returns (uint256) {
        return accruedScaled(agent) / PRECISION;
    }

    /// @notice What `agent` is owed in wei * PRECISION, sub-wei fraction included.
    function accruedScaled(address agent) public view returns (uint256) {
        uint256 position = _position[agent];
        uint256 weight = position & _WEIGHT_MASK;
        return (_pending[agent] & _VALUE_MASK)
            + weight * (uint256(_cumulative) - (position >> _WEIGHT_BITS));
    }

    /// @notice An agent's state as in the v2 pool: weight, the cumulative reward per weight at
    ///         its last settlement, and settled-but-unclaimed whole wei.
    function agents(address agent)
        external
        view
        returns (uint256 weight, uint256 rewardSnapshot, uint256 pending)
    {
        uint256 position = _position[agent];
        weight = position & _WEIGHT_MASK;
        rewardSnapshot = position >> _WEIGHT_BITS;
        pending = (_pending[agent] & _VALUE_MASK) / PRECISION;
    }

    /// @notice Reward per unit of weight ever distributed, scaled by PRECISION.
    function cumulativeRewardPerWeight() external view returns (uint256) {
        return _cumulative;
    }

    /// @notice Sum of all agents' current weights.
    function totalWeight() external view returns (uint256) {
        return _totalWeight;
    }

    /// @notice Deposits not yet distributed (held at zero total weight, plus division
    ///         remainders), in wei * PRECISION.
    function undistributedScaled() external view returns (uint256) {
        return _undistributed & _VALUE_MASK;
    }

    function _settle(address[] calldata agentList, uint256[] calldata weights) private {
        uint256 count = agentList.length;
        if (count != weights.length) revert LengthMismatch();
        uint256 cumulative = _cumulative;
        uint256 total = _totalWeight;
        // Weights change first, at the current cumulative, so this call's deposit is split by
        // the weights given in this call.
        for (uint256 i; i < count; ) {
            address agent = agentList[i];
            uint256 weight = weights[i];
            if (agent == address(0)) revert ZeroAddress();
            if (weight > _WEIGHT_MASK) revert WeightTooLarge(agent, weight);
            uint256 position = _position[agent];
            uint256 oldWeight = position & _WEIGHT_MASK;
            uint256 snapshot = position >> _WEIGHT_BITS;
            unchecked {
                // weight < 2^96 and cumulative - snapshot < 2^160: the product fits.
                if (oldWeight != 0 && snapshot != cumulative) {
                    _credit(agent, oldWeight * (cumulative - snapshot));
                }
                uint256 updated = (cumulative << _WEIGHT_BITS) | weight;
                if (updated != position) _position[agent] = updated;
                if (weight != oldWeight) {
                    // total is the sum of all weights, each < 2^96: no wrap either way.
                    total = total - oldWeight + weight;
                    emit AgentUpdated(agent, weight);
                }
                ++i;
            }
        }
        if (total > _WEIGHT_MASK) revert TotalWeightTooLarge();

        uint256 held = _undistributed & _VALUE_MASK;
        uint256 pool = held + msg.value * PRECISION;
        if (total != 0 && pool != 0) {
            uint256 increment = pool / total;
            pool -= increment * total;
            cumulative += increment;
            if (cumulative > type(uint160).max) revert AccumulatorOverflow();
        }
        if (pool != held) {
            if (pool >= _SLOT_SET) revert ScaledAmountOverflow();
            _undistributed = pool | _SLOT_SET;
        }
        _cumulative = uint160(cumulative);
        _totalWeight = uint96(total);
        emit Settled(msg.value, count);
    }

    /// @dev Adds `amount` scaled units to the agent's pending rewards.
    function _credit(address agent, uint256 amount) private {
        uint256 pending = (_pending[agent] & _VALUE_MASK) + amount;
        if (pending >= _SLOT_SET) revert ScaledAmountOverflow();
        _pending[agent] = pending | _SLOT_SET;
    }

    /// @dev Settles `agent` to the current cumulative and takes its whole wei out of pending;
    ///      the sub-wei fraction stays. Effects only: the caller pays.
    function _take(address agent) private returns (uint256 amount) {
        uint256 position = _position[agent];
        uint256 weight = position & _WEIGHT_MASK;
        uint256 snapshot = position >> _WEIGHT_BITS;
        uint256 cumulative = _cumulative;
        uint256 pending = _pending[agent] & _VALUE_MASK;
        bool settled = weight != 0 && snapshot != cumulative;
        if (settled) {
            uint256 accrued;
            unchecked {
                accrued = weight * (cumulative - snapshot);
            }
            pending += accrued;
            if (pending >= _SLOT_SET) revert ScaledAmountOverflow();
            _position[agent] = (cumulative << _WEIGHT_BITS) | weight;
        }
        amount = pending / PRECISION;
        if (settled || amount != 0) {
            _pending[agent] = (pending - amount * PRECISION) | _SLOT_SET;
        }
    }

    function _claimOne(address agent) private {
        uint256 amount = _take(agent);
        if (amount == 0) revert NothingToClaim();
        if (!_send(agent, amount, gasleft())) revert TransferFailed(agent, amount);
        emit Claimed(agent, amount);
    }

    function _batchClaim(address[] calldata agentList) private {
        uint256 count = agentList.length;
        for (uint256 i; i < count; ) {
            address agent = agentList[i];
            uint256 amount = _take(agent);
            if (amount != 0) {
                if (gasleft() < _BATCH_GAS_RESERVE) revert InsufficientGas();
                if (_send(agent, amount, BATCH_CLAIM_GAS)) {
                    emit Claimed(agent, amount);
                } else {
                    // Refused: put it back. The lock keeps the recipient out meanwhile.
                    _pending[agent] += amount * PRECISION;
                    emit ClaimFailed(agent, amount);
                }
            }
            unchecked {
                ++i;
            }
        }
    }

    /// @dev Value transfer that ignores return data, so a recipient cannot make us copy a
    ///      large revert payload.
    function _send(address to, uint256 amount, uint256 gasLimit) private returns (bool ok) {
        assembly ("memory-safe") {
            ok := call(gasLimit, to, amount, 0, 0, 0, 0)
        }
    }
}
