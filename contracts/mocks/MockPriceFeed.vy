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
# @dev round id (80 bits) | updatedAt << 80 | reverting << 255, one slot as an aggregator
#      packs its round data (a read costs what a Chainlink aggregator's does, not more).
_round: uint256


@deploy
def __init__(decimals_: uint8, answer_: int256):
    """
    @dev Sets the decimals and a first answer stamped now (round 1).
    """
    self.decimals = decimals_
    self.answer = answer_
    self._round = 1 | (block.timestamp << 80)


@external
def set_answer(answer_: int256):
    """
    @dev Sets a new answer stamped with `block.timestamp` and bumps the round.
    """
    self.answer = answer_
    self._round = ((self._round & (2**80 - 1)) + 1) | (block.timestamp << 80) | (self._round & (1 << 255))


@external
def set_round(answer_: int256, updated_at_: uint256):
    """
    @dev Sets a new answer with an explicit `updatedAt` and bumps the round.
    """
    assert updated_at_ < 2**80, "feed: time too large"
    self.answer = answer_
    self._round = ((self._round & (2**80 - 1)) + 1) | (updated_at_ << 80) | (self._round & (1 << 255))


@view
@external
def latestRoundData() -> (uint80, int256, uint256, uint256, uint80):
    """
    @dev Returns (roundId, answer, startedAt, updatedAt, answeredInRound).
    """
    r: uint256 = self._round
    assert r >> 255 == 0, "feed: dead"
    round_id: uint80 = convert(r & (2**80 - 1), uint80)
    updated: uint256 = (r >> 80) & (2**80 - 1)
    return round_id, self.answer, updated, updated, round_id


@view
@external
def updated_at() -> uint256:
    """
    @dev Time the latest answer was stamped.
    """
    return (self._round >> 80) & (2**80 - 1)


@view
@external
def round_id() -> uint80:
    """
    @dev Latest round id.
    """
    return convert(self._round & (2**80 - 1), uint80)


@view
@external
def reverting() -> bool:
    """
    @dev Whether `latestRoundData` reverts.
    """
    return self._round >> 255 == 1


@external
def set_reverting(reverting_: bool):
    """
    @dev Makes `latestRoundData` revert (True) or answer again (False).
    """
    if reverting_:
        self._round = self._round | (1 << 255)
    else:
        self._round = self._round & ~(1 << 255)


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
