//! Which teacher layer each student layer's hidden states are matched to.

use super::DistillError;
use crate::config::LayerMapping;

/// The `(student layer, teacher layer)` pairs of `mapping` for a student of `student_layers`
/// blocks and a teacher of `teacher_layers` blocks, in student-layer order.
///
/// `Uniform` maps every student layer i to teacher layer `round((i + 1) * Lt / Ls) - 1`
/// (halves round up; clamped to 0 when the student is more than twice as deep as the
/// teacher), so the last layers always meet; `Last` pairs the two last layers; `Explicit`
/// gives the teacher layer of each student layer and is checked against the teacher's depth.
pub fn layer_pairs(
    mapping: &LayerMapping,
    student_layers: usize,
    teacher_layers: usize,
) -> Result<Vec<(usize, usize)>, DistillError> {
    let (ls, lt) = (student_layers, teacher_layers);
    if ls == 0 || lt == 0 {
        return Ok(Vec::new());
    }
    Ok(match mapping {
        // round(x) = floor(x + 1/2) with x = (i + 1) lt / ls, in integers.
        LayerMapping::Uniform => (0..ls)
            .map(|i| (i, ((2 * (i + 1) * lt + ls) / (2 * ls)).saturating_sub(1)))
            .collect(),
        LayerMapping::Last => vec![(ls - 1, lt - 1)],
        LayerMapping::Explicit(layers) => {
            if let Some((i, &j)) = layers.iter().enumerate().find(|(_, &j)| j >= lt) {
                return Err(DistillError::MappingOutOfRange {
                    student_layer: i,
                    teacher_layer: j,
                    teacher_layers: lt,
                });
            }
            layers.iter().copied().enumerate().collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform(ls: usize, lt: usize) -> Vec<usize> {
        layer_pairs(&LayerMapping::Uniform, ls, lt)
            .unwrap()
            .into_iter()
            .map(|(_, j)| j)
            .collect()
    }

    #[test]
    fn uniform_mapping_spreads_the_student_over_the_teacher() {
        // round((i + 1) * Lt / Ls) - 1 for each student layer i.
        assert_eq!(uniform(2, 4), vec![1, 3]);
        assert_eq!(uniform(4, 4), vec![0, 1, 2, 3]);
        assert_eq!(uniform(3, 12), vec![3, 7, 11]);
        assert_eq!(uniform(4, 6), vec![1, 2, 4, 5]); // 1.5 -> 2, 3, 4.5 -> 5, 6
        assert_eq!(uniform(6, 24), vec![3, 7, 11, 15, 19, 23]);
        assert_eq!(
            uniform(12, 24),
            (0..12).map(|i| 2 * i + 1).collect::<Vec<_>>()
        );
        assert_eq!(uniform(5, 7), vec![0, 2, 3, 5, 6]); // 1.4, 2.8, 4.2, 5.6, 7
        assert_eq!(uniform(1, 9), vec![8]);
        // A student deeper than its teacher repeats teacher layers; the last layers meet.
        assert_eq!(uniform(4, 2), vec![0, 0, 1, 1]);
        assert_eq!(uniform(6, 2), vec![0, 0, 0, 0, 1, 1]); // 0.33 -> 0 (clamped), .., 1.67 -> 2
        for (ls, lt) in [(2, 4), (3, 7), (5, 13), (8, 3)] {
            let pairs = layer_pairs(&LayerMapping::Uniform, ls, lt).unwrap();
            assert_eq!(pairs.len(), ls);
            assert_eq!(pairs.last(), Some(&(ls - 1, lt - 1)));
            assert!(pairs.windows(2).all(|w| w[0].1 <= w[1].1), "monotone");
        }
    }

    #[test]
    fn last_and_explicit_mappings() {
        assert_eq!(
            layer_pairs(&LayerMapping::Last, 3, 8).unwrap(),
            vec![(2, 7)]
        );
        let explicit = LayerMapping::Explicit(vec![0, 5, 7]);
        assert_eq!(
            layer_pairs(&explicit, 3, 8).unwrap(),
            vec![(0, 0), (1, 5), (2, 7)]
        );
        let err = layer_pairs(&LayerMapping::Explicit(vec![0, 8, 2]), 3, 8).unwrap_err();
        assert!(
            matches!(
                err,
                DistillError::MappingOutOfRange {
                    student_layer: 1,
                    teacher_layer: 8,
                    teacher_layers: 8
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("teacher has 8 layers"), "{err}");
    }
}
