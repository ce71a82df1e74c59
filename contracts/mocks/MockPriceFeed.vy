# pragma version ~=0.4.3
"""
@title Mock Chainlink price feed (devnet and tests only)
@custom:contract-name MockPriceFeed
@license GNU Affero General Public License v3.0 only
@notice Implements the read side of Chainlink's `AggregatorV3Interface`.
        Anyone may set the answer: never use it where real value is at stake.
@custom:kill Not stoppable: a test feed.
"""


# Storage

# @dev Decimals of `answer`.
decimals: public(uint8)
# @dev Latest answer.
answer: public(int256)
# @dev Time the latest answer was stamped.
updated_at: public(uint256)
# @dev Latest round id.
round_id: public(uint80)
# @dev When set, `latestRoundData` reverts (a dead or paused aggregator).
reverting: public(bool)


@deploy
def __init__(decimals_: uint8, answer_: int256):
    """
    @dev Sets the decimals and a first answer stamped now (round 1).
    """
    self.decimals = decimals_
    self.answer = answer_
    self.updated_at = block.timestamp
    self.round_id = 1


@external
def set_answer(answer_: int256):
    """
    @dev Sets a new answer stamped with `block.timestamp` and bumps the round.
    """
    self.answer = answer_
    self.updated_at = block.timestamp
    self.round_id += 1


@external
def set_round(answer_: int256, updated_at_: uint256):
    """
    @dev Sets a new answer with an explicit `updatedAt` and bumps the round.
    """
    self.answer = answer_
    self.updated_at = updated_at_
    self.round_id += 1


@view
@external
def latestRoundData() -> (uint80, int256, uint256, uint256, uint80):
    """
    @dev Returns (roundId, answer, startedAt, updatedAt, answeredInRound).
    """
    assert not self.reverting, "feed: dead"
    return self.round_id, self.answer, self.updated_at, self.updated_at, self.round_id


@external
def set_reverting(reverting_: bool):
    """
    @dev Makes `latestRoundData` revert (True) or answer again (False).
    """
    self.reverting = reverting_


@view
@external
def description() -> String[32]:
    """
    @dev Feed description.
    """
    return "MOCK / USD"


@view
@external
def version() -> uint256:
    """
    @dev Aggregator version.
    """
    return 4
