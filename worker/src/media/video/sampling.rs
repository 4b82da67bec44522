//! Which frames to sample: the article's `np.arange(0, N, N / k).astype(int)`, reproduced bit for bit, and the
//! frames its decode loop then actually keeps.

/// Frame numbers the Python reference samples from a stream of `n` frames: `np.arange(0, n, n / k).astype(int)`.
///
/// numpy computes the length as `ceil((n - 0) / step)` with `step = n / k` in f64 (so it can be `k + 1` when
/// the division rounds up, e.g. `n = 17, k = 7`), fills element `i` with `0 + i * step` (numpy's `DOUBLE_fill`),
/// and `astype(int)` truncates toward zero. With `k > n` numbers repeat (`n = 3, k = 8`: `[0, 0, 0, 1, 1, 1, 2,
/// 2]`). Rounding can also make the last number equal `n` (`n = 17, k = 7`). Empty when `n == 0` or `k == 0`
/// (where numpy raises).
pub fn article_indices(n: usize, k: usize) -> Vec<usize> {
    if n == 0 || k == 0 {
        return Vec::new();
    }
    let step = n as f64 / k as f64;
    let len = (n as f64 / step).ceil() as usize;
    (0..len).map(|i| (0.0 + i as f64 * step) as usize).collect()
}

/// The frames the reference's `read_video_pyav` returns for `article_indices(n, k)`: it enumerates
/// `container.decode(video=0)` and keeps frame `i` when `i in indices`, so repeated numbers give one frame and a
/// number `>= n` (never reached) gives none. Sorted, unique, all `< n`.
pub fn sampled_frame_numbers(n: usize, k: usize) -> Vec<usize> {
    let mut indices = article_indices(n, k);
    indices.retain(|&i| i < n);
    indices.dedup();
    indices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn article_indices_repeat_frames_when_k_exceeds_n() {
        assert_eq!(article_indices(3, 8), vec![0, 0, 0, 1, 1, 1, 2, 2]);
    }

    #[test]
    fn article_indices_can_be_one_longer_than_k_like_numpy() {
        // np.arange(0, 17, 17 / 7) has 8 elements: 17 / (17 / 7) rounds to 7.000000000000001, and the last one,
        // 7 * (17 / 7) = 17.000000000000004, is frame 17 of a 17-frame stream.
        assert_eq!(article_indices(17, 7), vec![0, 2, 4, 7, 9, 12, 14, 17]);
        assert_eq!(sampled_frame_numbers(17, 7), vec![0, 2, 4, 7, 9, 12, 14]);
    }

    #[test]
    fn sampled_frame_numbers_keep_one_frame_per_repeated_number() {
        assert_eq!(sampled_frame_numbers(3, 8), vec![0, 1, 2]);
    }

    #[test]
    fn article_indices_of_an_empty_stream_are_empty() {
        assert!(article_indices(0, 8).is_empty());
        assert!(article_indices(10, 0).is_empty());
    }
}
