// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title A contract that can be destroyed: since Cancun (EIP-6780) SELFDESTRUCT deletes it only
/// in the transaction that created it, which frees its CREATE2 address for a re-deploy.
contract Phoenix {
    address public immutable factory;
    uint256 public endowment;

    // No constructor argument: the init code, hence the CREATE2 address, is the same each time.
    constructor() payable {
        factory = msg.sender;
        endowment = msg.value;
    }

    function destroy(address payable beneficiary) external {
        selfdestruct(beneficiary);
    }
}

/// @title Deploys a Phoenix with CREATE2 and destroys it in the same call, so the same salt
/// deploys at the same address again; `deploy` leaves one standing (a second deploy collides).
contract PhoenixFactory {
    uint256 public rounds;
    uint256 public collisions;
    address public lastPhoenix;

    event Reborn(address indexed phoenix, bytes32 indexed salt, address beneficiary);
    event Deployed(address indexed phoenix, bytes32 indexed salt);

    function createAndDestroy(bytes32 salt, address payable beneficiary) external payable {
        ++rounds;
        Phoenix p = new Phoenix{salt: salt, value: msg.value}();
        p.destroy(beneficiary);
        lastPhoenix = address(p);
        emit Reborn(address(p), salt, beneficiary);
    }

    /// @notice Deploys without destroying; a salt already used fails the CREATE2 (collision),
    /// which is recorded rather than reverted. A failed CREATE2 burns the gas it was given, so
    /// it runs in a call with a bounded share of the gas.
    function deploy(bytes32 salt) external returns (address phoenix) {
        try this.deployRaw{gas: 100_000}(salt) returns (address created) {
            phoenix = created;
        } catch {}
        if (phoenix == address(0)) {
            ++collisions;
        } else {
            lastPhoenix = phoenix;
        }
        emit Deployed(phoenix, salt);
    }

    function deployRaw(bytes32 salt) external returns (address phoenix) {
        require(msg.sender == address(this), "PhoenixFactory: internal");
        bytes memory initcode = type(Phoenix).creationCode;
        assembly {
            phoenix := create2(0, add(initcode, 0x20), mload(initcode), salt)
        }
    }

    /// @notice The address a Phoenix of `salt` deploys to (EIP-1014).
    function predict(bytes32 salt) external view returns (address) {
        bytes32 initHash = keccak256(type(Phoenix).creationCode);
        bytes32 digest = keccak256(abi.encodePacked(bytes1(0xff), address(this), salt, initHash));
        return address(uint160(uint256(digest)));
    }
}
