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
# @dev answer (int128, two's complement) | updatedAt (47 bits) << 128 | round id (80 bits)
#      << 175 | reverting << 255: one slot, as Chainlink's aggregators pack a transmission
#      (answer and timestamp) in one.
_round: uint256


@deploy
def __init__(decimals_: uint8, answer_: int256):
    """
    @dev Sets the decimals and a first answer stamped now (round 1).
    """
    self.decimals = decimals_
    self._round = self._pack(answer_, block.timestamp, 1, False)


@external
def set_answer(answer_: int256):
    """
    @dev Sets a new answer stamped with `block.timestamp` and bumps the round.
    """
    r: uint256 = self._round
    self._round = self._pack(answer_, block.timestamp, self._round_of(r) + 1, r >> 255 == 1)


@external
def set_round(answer_: int256, updated_at_: uint256):
    """
    @dev Sets a new answer with an explicit `updatedAt` and bumps the round.
    """
    r: uint256 = self._round
    self._round = self._pack(answer_, updated_at_, self._round_of(r) + 1, r >> 255 == 1)


@view
@external
def latestRoundData() -> (uint80, int256, uint256, uint256, uint80):
    """
    @dev Returns (roundId, answer, startedAt, updatedAt, answeredInRound).
    """
    r: uint256 = self._round
    assert r >> 255 == 0, "feed: dead"
    round_id: uint80 = convert(self._round_of(r), uint80)
    updated: uint256 = (r >> 128) & (2**47 - 1)
    return round_id, self._answer_of(r), updated, updated, round_id


@view
@external
def updated_at() -> uint256:
    """
    @dev Time the latest answer was stamped.
    """
    return (self._round >> 128) & (2**47 - 1)


@view
@external
def round_id() -> uint80:
    """
    @dev Latest round id.
    """
    return convert(self._round_of(self._round), uint80)


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
    r: uint256 = self._round
    self._round = self._pack(self._answer_of(r), (r >> 128) & (2**47 - 1), self._round_of(r), reverting_)


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


@view
@external
def answer() -> int256:
    """
    @dev Latest answer.
    """
    return self._answer_of(self._round)


@pure
@internal
def _pack(answer_: int256, updated_at_: uint256, round_id_: uint256, reverting_: bool) -> uint256:
    assert answer_ >= -(2**127) and answer_ < 2**127, "feed: answer out of range"
    assert updated_at_ < 2**47, "feed: time too large"
    assert round_id_ < 2**80, "feed: round id too large"
    word: uint256 = (convert(convert(answer_, bytes32), uint256) & (2**128 - 1)) | (updated_at_ << 128) | (round_id_ << 175)
    if reverting_:
        word |= 1 << 255
    return word


@pure
@internal
def _answer_of(word: uint256) -> int256:
    raw: int256 = convert(word & (2**128 - 1), int256)
    if raw >= 2**127:
        return raw - 2**128
    return raw


@pure
@internal
def _round_of(word: uint256) -> uint256:
    return (word >> 175) & (2**80 - 1)
