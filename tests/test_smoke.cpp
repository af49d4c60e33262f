#include <catch2/catch.hpp>
#include <cospec/cospec.hpp>
TEST_CASE("smoke", "[smoke]") { REQUIRE(cospec::version_major == 0); }
